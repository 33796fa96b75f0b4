#pragma once
// Keyword/value arrays for PQconnectdbParams / PQconnectStartParams built
// from the user's conninfo (passed as an expanded `dbname`), defaults before
// it (the conninfo may override them), fixed keywords after it (they win),
// and the password from --postgres-password-file last of all, so it never
// has to be in the conninfo, on a command line or in a log. libpq's own
// PGPASSFILE / passfile keep working as usual when no password is given.
#include <string>
#include <utility>
#include <vector>

namespace outbox::io {

class pg_params {
public:
    using kv = std::pair<std::string, std::string>;
    pg_params(const std::string& conninfo, const std::string& password, const std::vector<kv>& defaults,
              const std::vector<kv>& fixed) {
        for (const auto& [k, v] : defaults) add(k, v);
        add("dbname", conninfo);
        for (const auto& [k, v] : fixed) add(k, v);
        if (!password.empty()) add("password", password);
        for (std::size_t i = 0; i < keys_.size(); ++i) {
            kp_.push_back(keys_[i].c_str());
            vp_.push_back(values_[i].c_str());
        }
        kp_.push_back(nullptr);
        vp_.push_back(nullptr);
    }
    pg_params(const pg_params&) = delete;
    pg_params& operator=(const pg_params&) = delete;

    const char* const* keys() const noexcept { return kp_.data(); }
    const char* const* values() const noexcept { return vp_.data(); }

private:
    void add(const std::string& k, const std::string& v) {
        keys_.push_back(k);
        values_.push_back(v);
    }
    std::vector<std::string> keys_, values_;
    std::vector<const char*> kp_, vp_;
};

}  // namespace outbox::io
