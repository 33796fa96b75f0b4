#pragma once
// Test-side helpers of the operability scenarios (50-59, issue 11): a small
// strict parser of the Prometheus text exposition format (0.0.4), a scrape of
// the relay's /metrics, and a blocking run of an outbox-relay subcommand with
// its output captured. Header-only; failures throw std::runtime_error.
#include "http_get.hpp"
#include "relay_process.hpp"

#include <sys/wait.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace outbox::it::ops {

// One sample: name, labels (sorted), value.
struct sample {
    std::string name;
    std::map<std::string, std::string> labels;
    double value = 0;
};

struct exposition {
    std::map<std::string, std::string> types;  // family -> counter|gauge|histogram|summary|untyped
    std::map<std::string, std::string> help;
    std::vector<sample> samples;

    // The value of the one series `name` with exactly `labels`; nullopt if absent.
    std::optional<double> value(const std::string& name, const std::map<std::string, std::string>& labels = {}) const {
        for (const auto& s : samples)
            if (s.name == name && s.labels == labels) return s.value;
        return std::nullopt;
    }
    // Sum over every series of `name`.
    double sum(const std::string& name) const {
        double t = 0;
        for (const auto& s : samples)
            if (s.name == name) t += s.value;
        return t;
    }
    std::vector<sample> all(const std::string& name) const {
        std::vector<sample> out;
        for (const auto& s : samples)
            if (s.name == name) out.push_back(s);
        return out;
    }
};

namespace detail {

inline bool name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':'; }
inline bool name_char(char c) { return name_start(c) || std::isdigit(static_cast<unsigned char>(c)); }

inline double parse_value(const std::string& t, std::size_t line) {
    if (t == "+Inf" || t == "Inf") return HUGE_VAL;
    if (t == "-Inf") return -HUGE_VAL;
    if (t == "NaN") return NAN;
    char* end = nullptr;
    double v = std::strtod(t.c_str(), &end);
    if (t.empty() || end != t.c_str() + t.size())
        throw std::runtime_error("prometheus line " + std::to_string(line) + ": bad value '" + t + "'");
    return v;
}

// The family a sample name belongs to, given the declared types.
inline std::string family_of(const std::string& name, const std::map<std::string, std::string>& types) {
    if (types.count(name)) return name;
    for (const char* suf : {"_bucket", "_sum", "_count"}) {
        const std::string s(suf);
        if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
            std::string base = name.substr(0, name.size() - s.size());
            auto it = types.find(base);
            if (it != types.end() && (it->second == "histogram" || it->second == "summary")) return base;
        }
    }
    return {};
}

}  // namespace detail

// Parses `text` strictly: every line is a HELP, a TYPE or a sample; a TYPE
// comes before its family's samples and only once; a family's samples are
// contiguous; names and label names follow the grammar; label values use
// only the \\ \" \n escapes; no series appears twice; histogram buckets carry
// `le` and end with +Inf equal to _count; the text ends with a newline.
inline exposition parse_prometheus(const std::string& text) {
    exposition ex;
    if (text.empty() || text.back() != '\n') throw std::runtime_error("prometheus: text must end with a newline");
    std::set<std::string> seen_series, closed_families;
    std::string current_family;
    std::size_t pos = 0, lineno = 0;
    auto fail = [&](const std::string& why) {
        throw std::runtime_error("prometheus line " + std::to_string(lineno) + ": " + why);
    };
    while (pos < text.size()) {
        const std::size_t nl = text.find('\n', pos);
        std::string line = text.substr(pos, nl - pos);
        pos = nl + 1;
        ++lineno;
        if (line.empty()) continue;
        if (line[0] == '#') {
            std::string rest = line.substr(1);
            if (rest.rfind(" HELP ", 0) == 0 || rest.rfind(" TYPE ", 0) == 0) {
                const bool is_type = rest[1] == 'T';
                rest = rest.substr(6);
                const std::size_t sp = rest.find(' ');
                const std::string name = rest.substr(0, sp);
                if (name.empty() || !detail::name_start(name[0])) fail("bad metric name in comment");
                for (char c : name)
                    if (!detail::name_char(c)) fail("bad metric name in comment");
                const std::string arg = sp == std::string::npos ? "" : rest.substr(sp + 1);
                if (is_type) {
                    static const std::set<std::string> kinds{"counter", "gauge", "histogram", "summary", "untyped"};
                    if (!kinds.count(arg)) fail("unknown type '" + arg + "'");
                    if (ex.types.count(name)) fail("second TYPE for " + name);
                    if (closed_families.count(name) || current_family == name) fail("TYPE after samples of " + name);
                    ex.types[name] = arg;
                } else {
                    if (ex.help.count(name)) fail("second HELP for " + name);
                    ex.help[name] = arg;
                }
            }
            continue;  // other comments are allowed
        }
        sample s;
        std::size_t i = 0;
        if (!detail::name_start(line[0])) fail("bad metric name");
        while (i < line.size() && detail::name_char(line[i])) ++i;
        s.name = line.substr(0, i);
        if (i < line.size() && line[i] == '{') {
            ++i;
            while (true) {
                if (i < line.size() && line[i] == '}') {
                    ++i;
                    break;
                }
                std::size_t b = i;
                if (i >= line.size() || !(std::isalpha(static_cast<unsigned char>(line[i])) || line[i] == '_'))
                    fail("bad label name");
                while (i < line.size() && (std::isalnum(static_cast<unsigned char>(line[i])) || line[i] == '_')) ++i;
                std::string lname = line.substr(b, i - b);
                if (i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') fail("label without =\"");
                i += 2;
                std::string v;
                while (true) {
                    if (i >= line.size()) fail("unterminated label value");
                    char c = line[i++];
                    if (c == '"') break;
                    if (c == '\\') {
                        if (i >= line.size()) fail("dangling escape");
                        char e = line[i++];
                        if (e == 'n') v += '\n';
                        else if (e == '\\' || e == '"') v += e;
                        else fail("bad escape \\" + std::string(1, e));
                    } else {
                        v += c;
                    }
                }
                if (s.labels.count(lname)) fail("label " + lname + " twice");
                s.labels[lname] = v;
                if (i < line.size() && line[i] == ',') ++i;
                else if (i < line.size() && line[i] == '}') continue;
                else fail("expected , or }");
            }
        }
        if (i >= line.size() || line[i] != ' ') fail("expected a space before the value");
        std::string rest = line.substr(i + 1);
        const std::size_t sp = rest.find(' ');
        s.value = detail::parse_value(rest.substr(0, sp), lineno);
        if (sp != std::string::npos) {
            const std::string ts = rest.substr(sp + 1);
            if (ts.empty() || ts.find_first_not_of("-0123456789") != std::string::npos) fail("bad timestamp");
        }
        const std::string fam = detail::family_of(s.name, ex.types);
        if (fam.empty()) fail("sample " + s.name + " before (or without) its TYPE");
        if (fam != current_family) {
            if (closed_families.count(fam)) fail("samples of " + fam + " are not contiguous");
            if (!current_family.empty()) closed_families.insert(current_family);
            current_family = fam;
        }
        std::string key = s.name;
        for (const auto& [k, v] : s.labels) key += "\x1f" + k + "=" + v;
        if (!seen_series.insert(key).second) fail("series twice: " + key);
        if (ex.types[fam] == "counter" && !(s.value >= 0)) fail("negative counter " + s.name);
        if (s.name == fam + "_bucket" && !s.labels.count("le")) fail("bucket without le");
        ex.samples.push_back(std::move(s));
    }
    // Histograms: buckets non-decreasing in le order as written, +Inf == _count.
    for (const auto& [fam, type] : ex.types) {
        if (type != "histogram") continue;
        std::map<std::string, std::pair<double, double>> last;  // other labels -> (last bucket, +Inf)
        for (const auto& s : ex.samples) {
            if (s.name != fam + "_bucket") continue;
            auto other = s.labels;
            const std::string le = other["le"];
            other.erase("le");
            std::string k;
            for (const auto& [a, b] : other) k += a + "=" + b + ",";
            auto& [prev, inf] = last[k];
            if (s.value < prev) throw std::runtime_error("prometheus: " + fam + " buckets decrease");
            prev = s.value;
            if (le == "+Inf") inf = s.value;
        }
        for (const auto& s : ex.samples) {
            if (s.name != fam + "_count") continue;
            std::string k;
            for (const auto& [a, b] : s.labels) k += a + "=" + b + ",";
            if (last.count(k) && last[k].second != s.value)
                throw std::runtime_error("prometheus: " + fam + "_count differs from the +Inf bucket");
        }
    }
    return ex;
}

// GET /metrics from a relay listening on `port` and parse it.
inline exposition scrape(int port) {
    auto r = http_get("127.0.0.1", port, "/metrics");
    if (r.status != 200) throw std::runtime_error("/metrics answered " + std::to_string(r.status));
    return parse_prometheus(r.body);
}

struct command_result {
    int code = -1;  // exit code, or -1 when killed by a signal
    std::string output;  // stdout (stderr too when merged)
};

inline std::string shell_quote(const std::string& s) {
    std::string out = "'";
    for (char c : s) {
        if (c == '\'') out += "'\\''";
        else out += c;
    }
    return out + "'";
}

// Runs `binary args...` through /bin/sh, blocking, and captures stdout
// (stderr too with `merge_stderr`, else it goes to the test's stderr).
// `env` entries are prefixed as VAR=value.
inline command_result run_command(const std::string& binary, const std::vector<std::string>& args,
                                  bool merge_stderr = false,
                                  const std::vector<std::pair<std::string, std::string>>& env = {}) {
    std::string cmd;
    for (const auto& [k, v] : env) cmd += k + "=" + shell_quote(v) + " ";
    cmd += "timeout 120 " + shell_quote(binary);
    for (const auto& a : args) cmd += " " + shell_quote(a);
    if (merge_stderr) cmd += " 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) throw std::runtime_error("popen failed");
    command_result r;
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
    const int st = ::pclose(p);
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

}  // namespace outbox::it::ops
