/*
 * wshub_stats and wshub_metrics_text agree with what GET /metrics serves: a
 * server with the protocol, one open connection and one refused request
 * (404); then the engine alone (protocol off) gives the same names. The
 * struct's size rule: a caller with a shorter struct gets only its prefix.
 * Run under ASan + UBSan by tests/c_host_gets_logs_and_counters.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wshub.h"
#include "c_test_util.h"

/* GET `path`; the whole response (malloc'ed, NUL-terminated) or NULL. */
static char *http_get(uint16_t port, const char *path) {
    char req[256];
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    int fd = tcp_connect(port), len;
    if (fd < 0 || buf == NULL) {
        free(buf);
        return NULL;
    }
    len = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    if (write(fd, req, (size_t)len) != len) {
        close(fd);
        free(buf);
        return NULL;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    return buf;
}

/* The value of the sample line starting with `sample` + ' ' in `text`, or -1. */
static long long sample(const char *text, const char *sample) {
    const char *p = text;
    size_t len = strlen(sample);
    while ((p = strstr(p, sample)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[len] == ' ')
            return atoll(p + len + 1);
        p += len;
    }
    return -1;
}

/* `a` and `b` are the same text apart from the sample of
   wshub_handshakes_in_progress (the GET /metrics is itself a request in its
   handshake while it is answered). */
static int same_but_handshakes(const char *a, const char *b) {
    static const char skip[] = "wshub_handshakes_in_progress ";
    while (*a != '\0' && *b != '\0') {
        const char *ea = strchr(a, '\n'), *eb = strchr(b, '\n');
        size_t la = ea ? (size_t)(ea - a) : strlen(a), lb = eb ? (size_t)(eb - b) : strlen(b);
        int skipped = strncmp(a, skip, sizeof skip - 1) == 0 && strncmp(b, skip, sizeof skip - 1) == 0;
        if (!skipped && (la != lb || memcmp(a, b, la) != 0))
            return 0;
        a += la + (ea != NULL);
        b += lb + (eb != NULL);
    }
    return *a == *b;
}

/* wshub_metrics_text into a malloc'ed buffer, asking for the size first. */
static char *metrics(wshub_server *server) {
    size_t needed = 0, again = 0;
    char *buf;
    if (wshub_metrics_text(server, NULL, 0, &needed) != WSHUB_BUFFER_TOO_SMALL || needed < 2)
        return NULL;
    buf = malloc(needed + 256); /* room for a counter that grows meanwhile */
    if (buf == NULL || wshub_metrics_text(server, buf, needed + 256, &again) != WSHUB_OK) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int check(int ok, const char *what) {
    if (!ok)
        fprintf(stderr, "FAILED: %s\n", what);
    return ok ? 0 : 1;
}

static int run(int protocol) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    wshub_server_stats stats, shorter;
    char *text, *body = NULL, *page;
    int bad = 0, fd, rejected;
    uint16_t port;
    wshub_config_set_bind(config, "127.0.0.1:0");
    wshub_config_set_protocol(config, protocol);
    if (wshub_start(config, &callbacks, NULL, &server) != WSHUB_OK)
        return 100;
    wshub_config_free(config);
    port = wshub_local_port(server);
    fd = ws_open(port);
    page = http_get(port, "/nope-ws"); /* a plain request: not an upgrade, not a reject */
    free(page);
    {
        /* A refused upgrade: 404. */
        static const char req[] = "GET /elsewhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  "Sec-WebSocket-Version: 13\r\n\r\n";
        char buf[256];
        int r = tcp_connect(port);
        rejected = r >= 0 && write(r, req, sizeof req - 1) == (ssize_t)(sizeof req - 1) &&
                   read(r, buf, sizeof buf) > 0;
        if (r >= 0)
            close(r);
    }
    bad += check(fd >= 0 && rejected, "a connection and a refused upgrade");

    memset(&stats, 0xff, sizeof stats);
    stats.size = sizeof stats;
    bad += check(wshub_stats(server, &stats) == WSHUB_OK, "wshub_stats");
    bad += check(stats.size == sizeof stats, "size written back");
    bad += check(stats.connections == 1 && stats.connections_total == 1, "one connection");
    bad += check(stats.rejects_404_total == 1 && stats.rejects_total == 1, "one 404");
    text = metrics(server);
    bad += check(text != NULL, "wshub_metrics_text");
    if (protocol) {
        char *response = http_get(port, "/metrics");
        body = response ? strstr(response, "\r\n\r\n") : NULL;
        bad += check(body != NULL, "GET /metrics");
        if (body != NULL && text != NULL) {
            body += 4;
            /* The same text, counter for counter (nothing else moved in between). */
            if (!same_but_handshakes(body, text)) {
                fprintf(stderr, "--- /metrics\n%s--- wshub_metrics_text\n%s", body, text);
                bad += check(0, "/metrics == wshub_metrics_text");
            }
            bad += check(strstr(text, "reason=\"rate_limited\"") != NULL, "protocol counters present");
        }
        free(response);
    } else if (text != NULL) {
        bad += check(strstr(text, "reason=\"rate_limited\"") == NULL, "engine counters only");
    }
    if (text != NULL) {
        bad += check(sample(text, "wshub_connections") == (long long)stats.connections, "connections agree");
        bad += check(sample(text, "wshub_handshake_rejects_total{status=\"404\"}") ==
                         (long long)stats.rejects_404_total,
                     "404 rejects agree");
        bad += check(sample(text, "wshub_bytes_in_total") == (long long)stats.bytes_in_total, "bytes in agree");
        bad += check(strstr(text, "# TYPE wshub_connections gauge\n") != NULL, "Prometheus TYPE lines");
    }
    {
        /* An older caller: a struct that ends after `connections`. */
        size_t old = offsetof(wshub_server_stats, connections) + sizeof stats.connections;
        char small[8];
        size_t needed = 0;
        memset(&shorter, 0xab, sizeof shorter);
        shorter.size = old;
        bad += check(wshub_stats(server, &shorter) == WSHUB_OK && shorter.size == old &&
                         shorter.connections == 1 && shorter.connections_total == 0xababababababababULL,
                     "a shorter struct gets only its prefix");
        shorter.size = 1;
        bad += check(wshub_stats(server, &shorter) == WSHUB_INVALID_ARGUMENT, "size too small");
        bad += check(wshub_stats(server, NULL) == WSHUB_NULL_PARAMETER, "NULL stats");
        bad += check(wshub_metrics_text(server, small, sizeof small, &needed) == WSHUB_BUFFER_TOO_SMALL &&
                         needed > sizeof small,
                     "a small buffer");
        bad += check(wshub_metrics_text(server, NULL, 8, &needed) == WSHUB_NULL_PARAMETER, "NULL buffer");
    }
    free(text);
    if (fd >= 0)
        close(fd);
    wshub_stop(server);
    return bad;
}

int main(void) {
    int bad = run(1) + run(0);
    if (bad == 0)
        printf("stats_and_metrics: ok\n");
    return bad == 0 ? 0 : 1;
}
