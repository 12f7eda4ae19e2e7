// cpp_chat_server: the chat of ../chat_server.c written against wshub.hpp:
// rooms from ?room= (default "lobby"), nicknames from ?name=, every message
// broadcast to the room, joins and leaves announced, SIGINT stops cleanly.
#include <csignal>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <unordered_map>

#include <signal.h>

#include "wshub.hpp"

namespace {

volatile std::sig_atomic_t stop_requested = 0;

extern "C" void on_sigint(int) { stop_requested = 1; }

struct Member {
    std::string room;
    std::string name;
};

// Callbacks of different connections run on different threads: guard the map.
class Members {
  public:
    void add(uint64_t conn, Member m) {
        std::lock_guard<std::mutex> lock(mutex_);
        members_[conn] = std::move(m);
    }
    std::optional<Member> get(uint64_t conn) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = members_.find(conn);
        if (it == members_.end()) return std::nullopt;
        return it->second;
    }
    std::optional<Member> remove(uint64_t conn) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = members_.find(conn);
        if (it == members_.end()) return std::nullopt;
        Member m = std::move(it->second);
        members_.erase(it);
        return m;
    }

  private:
    std::mutex mutex_;
    std::unordered_map<uint64_t, Member> members_;
};

} // namespace

int main(int argc, char **argv) {
    std::string port = argc > 1 ? argv[1] : "9001";
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old); // wshub's threads inherit the mask
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);

    Members members;
    wshub::Callbacks cb;
    cb.on_upgrade = [](wshub::Handle, uint64_t conn, wshub::Request &req) -> uint16_t {
        auto room = req.query_param("room");
        if (room && (room->empty() || room->size() > 128)) return 400;
        auto name = req.query_param("name");
        req.set_identity(name && !name->empty() ? std::string(*name) : "guest" + std::to_string(conn));
        return 0;
    };
    cb.on_connect = [&members](wshub::Handle h, uint64_t conn, wshub::Request &req) {
        Member m;
        m.room = std::string(req.query_param("room").value_or("lobby"));
        m.name = h.identity(conn).value_or("guest" + std::to_string(conn));
        if (h.join(conn, m.room) != WSHUB_OK) {
            h.close(conn, 1008, "bad room name");
            return;
        }
        h.broadcast(m.room, "* " + m.name + " joined " + m.room);
        members.add(conn, std::move(m));
    };
    cb.on_message = [&members](wshub::Handle h, uint64_t conn, std::string_view data, bool text) {
        auto m = members.get(conn);
        if (!m) return;
        if (!text) {
            h.broadcast(m->room, data, false);
            return;
        }
        h.broadcast(m->room, m->name + ": " + std::string(data));
    };
    cb.on_close = [&members](wshub::Handle h, uint64_t conn, uint16_t code, std::string_view) {
        if (auto m = members.remove(conn))
            h.broadcast(m->room, "* " + m->name + " left " + m->room + " (" + std::to_string(code) + ")");
    };

    try {
        wshub::Config config;
        config.bind("127.0.0.1:" + port);
        wshub::Server server(config, std::move(cb));
        std::cout << "C++ chat server listening on 127.0.0.1:" << server.port() << std::endl;
        while (!stop_requested) sigsuspend(&old);
        server.stop(); // the destructor would do the same
    } catch (const wshub::Error &e) {
        std::cerr << "cpp_chat_server: " << e.what() << std::endl;
        return 1;
    }
    std::cout << "stopped" << std::endl;
    return 0;
}
