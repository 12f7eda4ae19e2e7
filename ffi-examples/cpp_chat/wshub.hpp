// wshub.hpp: a header-only C++17 RAII wrapper around wshub.h.
//
//   wshub::Config config;                 // owns a wshub_config
//   config.bind("127.0.0.1:0");
//   wshub::Callbacks cb;                  // std::function callbacks
//   cb.on_message = [](wshub::Handle h, uint64_t conn, std::string_view data, bool text) {
//       h.send(conn, data, text);
//   };
//   wshub::Server server(config, std::move(cb));   // throws wshub::Error
//   ...                                   // ~Server() stops and frees it
//
// The callbacks run on wshub's connection threads (see wshub.h): they must be
// thread-safe with respect to each other. An exception escaping a callback is
// caught here (it must never cross into C): on_upgrade then refuses with 500,
// the other callbacks close the connection with 1011.
#ifndef WSHUB_HPP
#define WSHUB_HPP

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "wshub.h"

namespace wshub {

// A wshub_result other than WSHUB_OK, as an exception.
class Error : public std::runtime_error {
  public:
    explicit Error(wshub_result code) : std::runtime_error(wshub_error_message(code)), code_(code) {}
    wshub_result code() const noexcept { return code_; }

  private:
    wshub_result code_;
};

inline void check(wshub_result rc) {
    if (rc != WSHUB_OK) throw Error(rc);
}

// Owns a wshub_config; setters chain and throw on a bad value.
class Config {
  public:
    Config() : raw_(wshub_config_new()) {
        if (!raw_) throw std::bad_alloc();
    }
    Config(const Config &) = delete;
    Config &operator=(const Config &) = delete;
    ~Config() { wshub_config_free(raw_); }

    Config &bind(const std::string &address) { check(wshub_config_set_bind(raw_, address.c_str())); return *this; }
    Config &path(const std::string &path) { check(wshub_config_set_path(raw_, path.c_str())); return *this; }
    Config &max_message_size(size_t n) { check(wshub_config_set_max_message_size(raw_, n)); return *this; }
    Config &max_connections(size_t n) { check(wshub_config_set_max_connections(raw_, n)); return *this; }
    Config &idle_timeout_ms(uint64_t ms) { check(wshub_config_set_idle_timeout_ms(raw_, ms)); return *this; }
    Config &shutdown_timeout_ms(uint64_t ms) { check(wshub_config_set_shutdown_timeout_ms(raw_, ms)); return *this; }
    const wshub_config *get() const noexcept { return raw_; }
    wshub_config *get() noexcept { return raw_; }

  private:
    wshub_config *raw_;
};

// A borrowed view of an upgrade request; valid only during the callback.
class Request {
  public:
    explicit Request(wshub_request *raw) : raw_(raw) {}
    std::string_view path() const { return wshub_request_path(raw_); }
    std::string_view query() const { return wshub_request_query(raw_); }
    std::string_view remote_addr() const { return wshub_request_remote_addr(raw_); }
    std::optional<std::string_view> header(const std::string &name) const { return opt(wshub_request_header(raw_, name.c_str())); }
    std::optional<std::string_view> query_param(const std::string &name) const {
        return opt(wshub_request_query_param(raw_, name.c_str()));
    }
    // Only in on_upgrade: attaches an identity to the connection it opens.
    void set_identity(const std::string &identity) { check(wshub_request_set_identity(raw_, identity.c_str())); }

  private:
    static std::optional<std::string_view> opt(const char *s) {
        return s ? std::optional<std::string_view>(s) : std::nullopt;
    }
    wshub_request *raw_;
};

// A non-owning handle to a running server: what callbacks receive. Every
// method is thread-safe and returns the wshub_result (no throw), because a
// connection may close at any moment and that is not exceptional.
class Handle {
  public:
    explicit Handle(wshub_server *raw) : raw_(raw) {}

    wshub_result send(uint64_t conn, std::string_view data, bool text = true) const {
        return wshub_send(raw_, conn, bytes(data), data.size(), text ? WSHUB_TEXT : WSHUB_BINARY);
    }
    wshub_result join(uint64_t conn, const std::string &room) const { return wshub_join(raw_, conn, room.c_str()); }
    wshub_result leave(uint64_t conn, const std::string &room) const { return wshub_leave(raw_, conn, room.c_str()); }
    wshub_result broadcast(const std::string &room, std::string_view data, bool text = true, uint64_t except = 0) const {
        return wshub_broadcast(raw_, room.c_str(), bytes(data), data.size(), text ? WSHUB_TEXT : WSHUB_BINARY, except);
    }
    wshub_result close(uint64_t conn, uint16_t code, const std::string &reason = "") const {
        return wshub_close(raw_, conn, code, reason.c_str());
    }
    size_t room_size(const std::string &room) const {
        size_t n = 0;
        return wshub_room_size(raw_, room.c_str(), &n) == WSHUB_OK ? n : 0;
    }
    std::optional<std::string> identity(uint64_t conn) const {
        char buf[256];
        size_t len = 0;
        wshub_result rc = wshub_conn_identity(raw_, conn, buf, sizeof buf, &len);
        if (rc == WSHUB_BUFFER_TOO_SMALL) {
            std::string big(len + 1, '\0');
            rc = wshub_conn_identity(raw_, conn, big.data(), big.size(), &len);
            if (rc == WSHUB_OK) return big.substr(0, len);
        }
        if (rc != WSHUB_OK) return std::nullopt;
        return std::string(buf, len);
    }
    uint16_t port() const { return wshub_local_port(raw_); }
    wshub_server *get() const noexcept { return raw_; }

  protected:
    static const uint8_t *bytes(std::string_view s) { return reinterpret_cast<const uint8_t *>(s.data()); }
    wshub_server *raw_;
};

// The callbacks; any may be left empty. Return 0 from on_upgrade to accept, or
// an HTTP status 400-599 to refuse.
struct Callbacks {
    std::function<uint16_t(Handle, uint64_t conn, Request &)> on_upgrade;
    std::function<void(Handle, uint64_t conn, Request &)> on_connect;
    std::function<void(Handle, uint64_t conn, std::string_view data, bool text)> on_message;
    std::function<void(Handle, uint64_t conn, uint16_t code, std::string_view reason)> on_close;
};

namespace detail {
// The C trampolines: user_data is the Callbacks, kept at a stable address.
inline uint16_t on_upgrade(void *ud, wshub_server *s, uint64_t conn, wshub_request *r) {
    try {
        Request request(r);
        auto &cb = static_cast<Callbacks *>(ud)->on_upgrade;
        return cb ? cb(Handle(s), conn, request) : 0;
    } catch (...) {
        return 500;
    }
}
inline void on_connect(void *ud, wshub_server *s, uint64_t conn, const wshub_request *r) {
    try {
        Request request(const_cast<wshub_request *>(r));
        auto &cb = static_cast<Callbacks *>(ud)->on_connect;
        if (cb) cb(Handle(s), conn, request);
    } catch (...) {
        wshub_close(s, conn, 1011, "internal error");
    }
}
inline void on_message(void *ud, wshub_server *s, uint64_t conn, const uint8_t *data, size_t len,
                       wshub_message_kind kind) {
    try {
        auto &cb = static_cast<Callbacks *>(ud)->on_message;
        if (cb) cb(Handle(s), conn, std::string_view(reinterpret_cast<const char *>(data), len), kind == WSHUB_TEXT);
    } catch (...) {
        wshub_close(s, conn, 1011, "internal error");
    }
}
inline void on_close(void *ud, wshub_server *s, uint64_t conn, uint16_t code, const char *reason) {
    try {
        auto &cb = static_cast<Callbacks *>(ud)->on_close;
        if (cb) cb(Handle(s), conn, code, reason);
    } catch (...) {
    }
}
} // namespace detail

// Owns a running server: started by the constructor (throws wshub::Error),
// stopped gracefully and freed by stop() or the destructor. Movable, not copyable.
class Server : public Handle {
  public:
    Server(const Config &config, Callbacks callbacks)
        : Handle(nullptr), callbacks_(std::make_unique<Callbacks>(std::move(callbacks))) {
        wshub_callbacks c = WSHUB_CALLBACKS_INIT;
        c.on_upgrade = detail::on_upgrade;
        c.on_connect = detail::on_connect;
        c.on_message = detail::on_message;
        c.on_close = detail::on_close;
        check(wshub_start(config.get(), &c, callbacks_.get(), &raw_));
    }
    Server(const Server &) = delete;
    Server &operator=(const Server &) = delete;
    Server(Server &&other) noexcept : Handle(std::exchange(other.raw_, nullptr)), callbacks_(std::move(other.callbacks_)) {}
    Server &operator=(Server &&other) noexcept {
        if (this != &other) {
            stop();
            raw_ = std::exchange(other.raw_, nullptr);
            callbacks_ = std::move(other.callbacks_);
        }
        return *this;
    }
    ~Server() { stop(); }

    // Graceful stop and free; every callback has returned when this returns.
    // Call it (or let the destructor) from outside callbacks: inside one, call
    // wshub_stop on the callback's server pointer, which only begins the stop.
    // Idempotent.
    void stop() noexcept { wshub_stop(std::exchange(raw_, nullptr)); }

  private:
    std::unique_ptr<Callbacks> callbacks_; // user_data of the C callbacks
};

} // namespace wshub

#endif // WSHUB_HPP
