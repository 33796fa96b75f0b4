// Placeholder translation unit; the I/O modules land next to it.
namespace outbox::io {}
