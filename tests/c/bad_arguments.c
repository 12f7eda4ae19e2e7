/*
 * Calls every exported wshub function with NULL, with a stopped server, and
 * with an unknown or closed connection id: each must return its documented
 * error code (or NULL / 0 / no-op), and nothing may crash. Built with
 * -Werror under ASan + UBSan by tests/c_api_rejects_bad_arguments.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "wshub.h"

static int failures = 0;

#define CHECK(expr)                                                                     \
    do {                                                                                \
        if (!(expr)) {                                                                  \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #expr);    \
            failures++;                                                                 \
        }                                                                               \
    } while (0)

#define CHECK_RC(expr, want)                                                            \
    do {                                                                                \
        wshub_result got_ = (expr);                                                     \
        if (got_ != (want)) {                                                           \
            fprintf(stderr, "%s:%d: %s returned %u (%s), expected %s\n", __FILE__,      \
                    __LINE__, #expr, (unsigned)got_, wshub_error_message(got_), #want); \
            failures++;                                                                 \
        }                                                                               \
    } while (0)

static const uint8_t HELLO[] = "hello";

/* ---- a connection that opens and closes, to get a closed id ---- */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static uint64_t connected_id = 0;
static int closed = 0;

static void on_connect(void *ud, wshub_server *s, uint64_t conn, const wshub_request *r) {
    (void)ud;
    (void)r;
    /* Inside a callback: NULL arguments are still refused, not crashed on. */
    CHECK_RC(wshub_send(s, conn, NULL, 5, WSHUB_TEXT), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_shutdown(s), WSHUB_WRONG_MODE);
    pthread_mutex_lock(&lock);
    connected_id = conn;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

static void on_close(void *ud, wshub_server *s, uint64_t conn, uint16_t code, const char *reason) {
    (void)ud;
    (void)code;
    CHECK(reason != NULL);
    CHECK_RC(wshub_send(s, conn, HELLO, 5, WSHUB_TEXT), WSHUB_NO_SUCH_CONNECTION);
    pthread_mutex_lock(&lock);
    closed = 1;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

static int wait_for(int *flag_or_null, uint64_t *id_or_null) {
    struct timespec deadline;
    int ok;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&lock);
    while (!(flag_or_null ? *flag_or_null : *id_or_null != 0)) {
        if (pthread_cond_timedwait(&changed, &lock, &deadline) != 0)
            break;
    }
    ok = flag_or_null ? *flag_or_null : *id_or_null != 0;
    pthread_mutex_unlock(&lock);
    return ok;
}

/* Sends a WebSocket upgrade request by hand (no client library in C). */
static int start_websocket(uint16_t port) {
    static const char request[] = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  "Sec-WebSocket-Version: 13\r\n\r\n";
    struct sockaddr_in addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        return -1;
    if (write(fd, request, sizeof request - 1) != (ssize_t)(sizeof request - 1))
        return -1;
    return fd;
}

/* Reads the answer to the upgrade request; checks it is a 101. */
static void finish_websocket(int fd) {
    char response[512];
    ssize_t n = fd < 0 ? -1 : read(fd, response, sizeof response - 1);
    CHECK(n > 0);
    if (n > 0) {
        response[n] = '\0';
        CHECK(strncmp(response, "HTTP/1.1 101", 12) == 0);
    }
}

/* Reads the answer to the upgrade request; checks its status line. */
static void expect_status(int fd, const char *status_line) {
    char response[512];
    ssize_t n = fd < 0 ? -1 : read(fd, response, sizeof response - 1);
    CHECK(n > 0);
    if (n > 0) {
        response[n] = '\0';
        if (strncmp(response, status_line, strlen(status_line)) != 0) {
            fprintf(stderr, "expected %s, got: %.40s\n", status_line, response);
            failures++;
        }
    }
}

static int open_websocket(uint16_t port) {
    int fd = start_websocket(port);
    finish_websocket(fd);
    return fd;
}

static void null_everything(void) {
    wshub_event *event = NULL;
    wshub_server *server = NULL;
    size_t n = 0;
    int fd = 0;
    char buf[8];
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();

    /* config */
    wshub_config_free(NULL);
    CHECK_RC(wshub_config_set_bind(NULL, "127.0.0.1:0"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_bind(config, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_bind(config, "not an address"), WSHUB_INVALID_ARGUMENT);
    CHECK_RC(wshub_config_set_bind(config, "\xff\xfe"), WSHUB_INVALID_ARGUMENT);
    CHECK_RC(wshub_config_add_trusted_proxy(config, "10.0.0.0/33"), WSHUB_INVALID_ARGUMENT);
    CHECK_RC(wshub_config_add_trusted_proxy(config, "10.0.0.0/8"), WSHUB_OK);
    CHECK_RC(wshub_config_set_admin_bind(NULL, "127.0.0.1:0"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_admin_bind(config, "not an address"), WSHUB_INVALID_ARGUMENT);
    CHECK_RC(wshub_config_set_admin_bind(config, ""), WSHUB_OK);
    CHECK_RC(wshub_config_set_path(NULL, "/ws"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_path(config, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_max_message_size(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_outbound_queue(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_outbound_max_bytes(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_frame_rate_limit(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_max_fragments(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_compression(NULL, true), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_compression_min_bytes(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_max_connections(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_reader_stack_size(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_writer_stack_size(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_read_buffer_size(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_write_buffer_size(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_hub_queue(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_heartbeat_interval_ms(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_idle_timeout_ms(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_handshake_timeout_ms(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_close_timeout_ms(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_shutdown_timeout_ms(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_upgrade_timeout_ms(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_event_queue_capacity(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_protocol(NULL, true), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_rate_limit(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_rate_burst(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_history_size(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_history_ttl_ms(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_history_max_bytes(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_history_total_max_bytes(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_replay_max_bytes(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_max_rooms_per_client(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_max_rooms(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_max_reply_backlog(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_max_handshakes(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_max_handshakes_per_ip(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_max_connections_per_ip(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_connect_rate_per_ip(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_overflow_sockets(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_request_body_budget(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_add_trusted_proxy(NULL, "10.0.0.0/8"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_jwt_secret(NULL, "s"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_jwt_public_key_pem(NULL, "pem"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_jwt_audience(NULL, "a"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_jwt_issuer(NULL, "i"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_add_allow_origin(NULL, "https://a.test"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_add_allow_origin(config, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_max_connections_per_user(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_sse(NULL, false), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_add_namespace(NULL, "a:", NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_add_namespace(config, NULL, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_proxy_connect(NULL, "http://127.0.0.1:1/"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_proxy_join(NULL, "http://127.0.0.1:1/"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_proxy_publish(NULL, "http://127.0.0.1:1/"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_proxy_timeout_ms(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_proxy_key(NULL, "k"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_api_key(NULL, "k"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_max_bans(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_tls_cert_file(NULL, "cert.pem"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_tls_cert_file(config, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_tls_cert_pem(NULL, "pem"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_tls_cert_pem(config, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_tls_key_file(NULL, "key.pem"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_tls_key_file(config, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_tls_key_pem(NULL, "pem"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_tls_key_pem(config, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_tls_client_ca_file(NULL, "ca.pem"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_tls_client_ca_file(config, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_tls_client_ca_pem(NULL, "pem"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_tls_client_ca_pem(config, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_redis(NULL, "redis://127.0.0.1"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_add_redis(NULL, "redis://127.0.0.1"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_add_redis(config, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_redis_prefix(NULL, "p"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_redis_prefix(config, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_redis_timeout_ms(NULL, 1), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_add_redis_sentinel(NULL, "127.0.0.1:26379"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_add_redis_sentinel(config, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_add_redis_sentinel(config, "no port"), WSHUB_INVALID_ARGUMENT);
    CHECK_RC(wshub_config_set_redis_sentinel_master(NULL, "m"), WSHUB_NULL_PARAMETER);

    /* start: NULL arguments, and invalid configurations */
    CHECK_RC(wshub_config_set_bind(config, "127.0.0.1:0"), WSHUB_OK);
    CHECK_RC(wshub_start(NULL, &callbacks, NULL, &server), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_start(config, NULL, NULL, &server), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_start(config, &callbacks, NULL, NULL), WSHUB_NULL_PARAMETER);
    {
        /* Not from WSHUB_CALLBACKS_INIT: no size, refused rather than guessed. */
        wshub_callbacks unsized = WSHUB_CALLBACKS_INIT;
        unsized.struct_size = 0;
        CHECK_RC(wshub_start(config, &unsized, NULL, &server), WSHUB_INVALID_ARGUMENT);
        unsized.struct_size = sizeof unsized - 1;
        CHECK_RC(wshub_start(config, &unsized, NULL, &server), WSHUB_INVALID_ARGUMENT);
    }
    CHECK_RC(wshub_start_polling(NULL, &server), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_start_polling(config, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_config_set_path(config, "no-slash"), WSHUB_OK);
    CHECK_RC(wshub_start(config, &callbacks, NULL, &server), WSHUB_INVALID_CONFIG);
    CHECK_RC(wshub_config_set_path(config, "/ws"), WSHUB_OK);
    /* a JWT key that does not parse, or a secret and a key both set */
    CHECK_RC(wshub_config_set_protocol(config, true), WSHUB_OK);
    CHECK_RC(wshub_config_set_jwt_public_key_pem(config, "not a key"), WSHUB_OK);
    CHECK_RC(wshub_start(config, &callbacks, NULL, &server), WSHUB_INVALID_CONFIG);
    CHECK_RC(wshub_config_set_jwt_public_key_pem(config, NULL), WSHUB_OK);
    CHECK_RC(wshub_config_set_jwt_secret(config, "s"), WSHUB_OK);
    CHECK_RC(wshub_config_set_jwt_secret(config, NULL), WSHUB_OK);
    /* a Redis URL that does not parse, or an empty key prefix */
    CHECK_RC(wshub_config_set_redis(config, "not a url"), WSHUB_OK);
    CHECK_RC(wshub_start(config, &callbacks, NULL, &server), WSHUB_INVALID_CONFIG);
    CHECK_RC(wshub_config_set_redis(config, NULL), WSHUB_OK);
    CHECK_RC(wshub_config_set_redis_prefix(config, ""), WSHUB_OK);
    CHECK_RC(wshub_start(config, &callbacks, NULL, &server), WSHUB_INVALID_CONFIG);
    CHECK_RC(wshub_config_set_redis_prefix(config, "wshub"), WSHUB_OK);
    /* a Redis call timeout of 0 */
    CHECK_RC(wshub_config_set_redis_timeout_ms(config, 0), WSHUB_OK);
    CHECK_RC(wshub_start(config, &callbacks, NULL, &server), WSHUB_INVALID_CONFIG);
    CHECK_RC(wshub_config_set_redis_timeout_ms(config, 1000), WSHUB_OK);
    /* a sentinel without a master name (on a config of its own: a sentinel
       once added stays) */
    wshub_config *sentinel = wshub_config_new();
    CHECK(sentinel != NULL);
    CHECK_RC(wshub_config_set_bind(sentinel, "127.0.0.1:0"), WSHUB_OK);
    CHECK_RC(wshub_config_set_protocol(sentinel, true), WSHUB_OK);
    CHECK_RC(wshub_config_add_redis_sentinel(sentinel, "127.0.0.1:26379"), WSHUB_OK);
    CHECK_RC(wshub_start(sentinel, &callbacks, NULL, &server), WSHUB_INVALID_CONFIG);
    CHECK_RC(wshub_config_set_redis_sentinel_master(sentinel, "m"), WSHUB_OK);
    CHECK_RC(wshub_config_set_redis_sentinel_master(sentinel, NULL), WSHUB_OK);
    /* sentinel with two Redis shards */
    CHECK_RC(wshub_config_set_redis_sentinel_master(sentinel, "m"), WSHUB_OK);
    CHECK_RC(wshub_config_set_redis(sentinel, "redis://127.0.0.1:1"), WSHUB_OK);
    CHECK_RC(wshub_config_add_redis(sentinel, "redis://127.0.0.1:2"), WSHUB_OK);
    CHECK_RC(wshub_start(sentinel, &callbacks, NULL, &server), WSHUB_INVALID_CONFIG);
    wshub_config_free(sentinel);
    /* a second Redis URL (a shard) that does not parse */
    CHECK_RC(wshub_config_set_redis(config, "redis://127.0.0.1:1"), WSHUB_OK);
    CHECK_RC(wshub_config_add_redis(config, "not a url"), WSHUB_OK);
    CHECK_RC(wshub_start(config, &callbacks, NULL, &server), WSHUB_INVALID_CONFIG);
    CHECK_RC(wshub_config_set_redis(config, NULL), WSHUB_OK);
    CHECK_RC(wshub_config_set_sse(config, false), WSHUB_OK);
    CHECK_RC(wshub_config_set_sse(config, true), WSHUB_OK);
    CHECK_RC(wshub_config_set_compression(config, false), WSHUB_OK);
    CHECK_RC(wshub_config_set_compression(config, true), WSHUB_OK);
    CHECK_RC(wshub_config_set_compression_min_bytes(config, 0), WSHUB_OK);
    CHECK_RC(wshub_config_set_protocol(config, false), WSHUB_OK);
    CHECK_RC(wshub_config_set_event_queue_capacity(config, 0), WSHUB_OK);
    CHECK_RC(wshub_start_polling(config, &server), WSHUB_INVALID_CONFIG);
    CHECK_RC(wshub_config_set_event_queue_capacity(config, 8), WSHUB_OK);
    CHECK_RC(wshub_config_set_outbound_queue(config, 0), WSHUB_OK);
    CHECK_RC(wshub_start_polling(config, &server), WSHUB_INVALID_CONFIG);
    CHECK_RC(wshub_config_set_outbound_queue(config, 8), WSHUB_OK);
    /* TLS material that is not PEM: refused at start */
    CHECK_RC(wshub_config_set_tls_cert_pem(config, "not a certificate"), WSHUB_OK);
    CHECK_RC(wshub_config_set_tls_key_pem(config, "not a key"), WSHUB_OK);
    CHECK_RC(wshub_start(config, &callbacks, NULL, &server), WSHUB_INVALID_CONFIG);
    CHECK(server == NULL); /* out-parameters are written only on success */
    wshub_config_free(config);

    /* server functions */
    wshub_stop(NULL);
    CHECK_RC(wshub_shutdown(NULL), WSHUB_NULL_PARAMETER);
    CHECK(wshub_local_port(NULL) == 0);
    CHECK_RC(wshub_reload_tls(NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_send(NULL, 1, HELLO, 5, WSHUB_TEXT), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_join(NULL, 1, "room"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_leave(NULL, 1, "room"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_broadcast(NULL, "room", HELLO, 5, WSHUB_TEXT, 0), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_room_size(NULL, "room", &n), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_connection_count(NULL, &n), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_close(NULL, 1, 1000, "bye"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_conn_set_user_data(NULL, 1, &n), WSHUB_NULL_PARAMETER);
    CHECK(wshub_conn_user_data(NULL, 1) == NULL);
    CHECK_RC(wshub_conn_identity(NULL, 1, buf, sizeof buf, &n), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_poll_event(NULL, 0, &event), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_event_fd(NULL, &fd), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_publish(NULL, "room", HELLO, 5, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_publish_binary(NULL, "room", HELLO, 5, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_disconnect_user(NULL, "u", 4000, NULL, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_ban(NULL, "u", 60, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_unban(NULL, "u"), WSHUB_NULL_PARAMETER);

    /* events and requests */
    wshub_event_free(NULL);
    CHECK(wshub_event_get_kind(NULL) == WSHUB_EVENT_NONE);
    CHECK(wshub_event_conn(NULL) == 0);
    CHECK(wshub_event_request(NULL) == NULL);
    CHECK(wshub_event_data(NULL, &n) == NULL);
    CHECK(wshub_event_message_kind(NULL) == 0);
    CHECK(wshub_event_close_code(NULL) == 0);
    CHECK(wshub_event_close_reason(NULL) == NULL);
    CHECK(wshub_event_conn_user_data(NULL) == NULL);
    CHECK_RC(wshub_event_accept(NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_event_reject(NULL, 403), WSHUB_NULL_PARAMETER);
    CHECK(wshub_request_remote_addr(NULL) == NULL);
    CHECK(wshub_request_path(NULL) == NULL);
    CHECK(wshub_request_query(NULL) == NULL);
    CHECK(wshub_request_header(NULL, "Host") == NULL);
    CHECK(wshub_request_query_param(NULL, "room") == NULL);
    CHECK(wshub_request_tls_client_subject(NULL) == NULL);
    CHECK_RC(wshub_request_set_identity(NULL, "alice"), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_request_set_subprotocol(NULL, "chat"), WSHUB_NULL_PARAMETER);
    CHECK(wshub_request_user(NULL) == NULL);

    /* always-valid functions */
    CHECK(strcmp(wshub_version(), WSHUB_VERSION) == 0);
    CHECK(wshub_error_message(WSHUB_OK) != NULL);
    CHECK(wshub_error_message(WSHUB_STOPPED) != NULL);
    CHECK(strcmp(wshub_error_message(12345), "unknown wshub error code") == 0);
    CHECK(wshub_last_error(NULL, 0) > 0); /* after the failures above */
}

/* A running callback server: unknown and closed ids, bad values, then stopped. */
static void callback_server(void) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    wshub_event *event = NULL;
    uint64_t conn;
    size_t n = 99;
    int fd = -1;
    char buf[4];
    callbacks.on_connect = on_connect;
    callbacks.on_close = on_close;
    CHECK_RC(wshub_config_set_bind(config, "127.0.0.1:0"), WSHUB_OK);
    CHECK_RC(wshub_start(config, &callbacks, NULL, &server), WSHUB_OK);
    wshub_config_free(config);
    if (server == NULL)
        return;
    CHECK(wshub_local_port(server) != 0);
    CHECK_RC(wshub_reload_tls(server), WSHUB_INVALID_CONFIG); /* no TLS configured */

    /* NULL arguments with a valid server */
    CHECK_RC(wshub_send(server, 1, NULL, 5, WSHUB_TEXT), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_join(server, 1, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_leave(server, 1, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_broadcast(server, NULL, HELLO, 5, WSHUB_TEXT, 0), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_broadcast(server, "room", NULL, 5, WSHUB_TEXT, 0), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_room_size(server, NULL, &n), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_room_size(server, "room", NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_connection_count(server, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_conn_identity(server, 1, NULL, 4, &n), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_conn_identity(server, 1, buf, sizeof buf, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_poll_event(server, 0, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_event_fd(server, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_stats(NULL, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_stats(server, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_metrics_text(NULL, NULL, 0, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_metrics_text(server, NULL, 8, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_adopt(NULL, 0, NULL, 0), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_adopt(server, 0, NULL, 5), WSHUB_NULL_PARAMETER);

    /* wshub_adopt refuses what is not a connected TCP socket, and leaves it open */
    {
        int pipe_fds[2];
        CHECK_RC(wshub_adopt(server, -1, NULL, 0), WSHUB_INVALID_ARGUMENT);
        CHECK(pipe(pipe_fds) == 0);
        CHECK_RC(wshub_adopt(server, pipe_fds[0], NULL, 0), WSHUB_INVALID_ARGUMENT);
        CHECK(close(pipe_fds[0]) == 0 && close(pipe_fds[1]) == 0); /* still ours to close */
    }
    CHECK_RC(wshub_set_log_callback(6, NULL, NULL), WSHUB_INVALID_ARGUMENT);
    CHECK_RC(wshub_publish(server, NULL, HELLO, 5, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_publish_binary(server, "room", NULL, 5, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_disconnect_user(server, NULL, 4000, NULL, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_ban(server, NULL, 60, NULL), WSHUB_NULL_PARAMETER);
    CHECK_RC(wshub_unban(server, NULL), WSHUB_NULL_PARAMETER);
    /* the protocol is off here: nothing to publish into or ban from */
    CHECK_RC(wshub_publish(server, "room", (const uint8_t *)"1", 1, NULL), WSHUB_REFUSED);
    CHECK_RC(wshub_unban(server, "u"), WSHUB_REFUSED);

    /* bad values */
    CHECK_RC(wshub_broadcast(server, "", HELLO, 5, WSHUB_TEXT, 0), WSHUB_INVALID_ROOM);
    CHECK_RC(wshub_broadcast(server, "room", (const uint8_t *)"\xff", 1, WSHUB_TEXT, 0), WSHUB_INVALID_ARGUMENT);
    CHECK_RC(wshub_broadcast(server, "room", HELLO, 5, 77, 0), WSHUB_INVALID_ARGUMENT);
    CHECK_RC(wshub_broadcast(server, "room", NULL, 0, WSHUB_BINARY, 0), WSHUB_OK); /* empty room, empty message */
    CHECK_RC(wshub_room_size(server, "room", &n), WSHUB_OK);
    CHECK(n == 0);
    CHECK_RC(wshub_poll_event(server, 0, &event), WSHUB_WRONG_MODE);
    CHECK_RC(wshub_event_fd(server, &fd), WSHUB_WRONG_MODE);

    /* an id that never existed */
    CHECK_RC(wshub_send(server, 424242, HELLO, 5, WSHUB_TEXT), WSHUB_NO_SUCH_CONNECTION);
    CHECK_RC(wshub_join(server, 424242, "room"), WSHUB_NO_SUCH_CONNECTION);
    CHECK_RC(wshub_leave(server, 424242, "room"), WSHUB_NO_SUCH_CONNECTION);
    CHECK_RC(wshub_close(server, 424242, 1000, "bye"), WSHUB_NO_SUCH_CONNECTION);
    CHECK_RC(wshub_close(server, 424242, 1005, "bye"), WSHUB_INVALID_CLOSE_CODE);
    CHECK_RC(wshub_conn_set_user_data(server, 424242, &n), WSHUB_NO_SUCH_CONNECTION);
    CHECK(wshub_conn_user_data(server, 424242) == NULL);
    CHECK_RC(wshub_conn_identity(server, 424242, buf, sizeof buf, &n), WSHUB_NO_SUCH_CONNECTION);

    /* a connection that was open and is closed */
    fd = open_websocket(wshub_local_port(server));
    CHECK(fd >= 0);
    CHECK(wait_for(NULL, &connected_id));
    conn = connected_id;
    CHECK_RC(wshub_conn_set_user_data(server, conn, &n), WSHUB_OK);
    CHECK(wshub_conn_user_data(server, conn) == &n);
    CHECK_RC(wshub_conn_identity(server, conn, buf, sizeof buf, &n), WSHUB_NOT_FOUND);
    CHECK_RC(wshub_join(server, conn, "room"), WSHUB_OK);
    CHECK_RC(wshub_room_size(server, "room", &n), WSHUB_OK);
    CHECK(n == 1);
    CHECK_RC(wshub_close(server, conn, 999, NULL), WSHUB_INVALID_CLOSE_CODE);
    if (fd >= 0)
        close(fd);
    CHECK(wait_for(&closed, NULL));
    CHECK_RC(wshub_send(server, conn, HELLO, 5, WSHUB_TEXT), WSHUB_NO_SUCH_CONNECTION);
    CHECK_RC(wshub_join(server, conn, "room"), WSHUB_NO_SUCH_CONNECTION);
    CHECK_RC(wshub_leave(server, conn, "room"), WSHUB_NO_SUCH_CONNECTION);
    CHECK_RC(wshub_close(server, conn, 1000, NULL), WSHUB_NO_SUCH_CONNECTION);
    CHECK_RC(wshub_conn_set_user_data(server, conn, &n), WSHUB_NO_SUCH_CONNECTION);
    CHECK(wshub_conn_user_data(server, conn) == NULL);
    CHECK_RC(wshub_room_size(server, "room", &n), WSHUB_OK);
    CHECK(n == 0);

    /* stopped (handle kept by wshub_shutdown) */
    CHECK_RC(wshub_shutdown(server), WSHUB_OK);
    CHECK_RC(wshub_shutdown(server), WSHUB_OK); /* idempotent */
    CHECK_RC(wshub_reload_tls(server), WSHUB_STOPPED);
    CHECK_RC(wshub_send(server, conn, HELLO, 5, WSHUB_TEXT), WSHUB_STOPPED);
    CHECK_RC(wshub_join(server, conn, "room"), WSHUB_STOPPED);
    CHECK_RC(wshub_leave(server, conn, "room"), WSHUB_STOPPED);
    CHECK_RC(wshub_broadcast(server, "room", HELLO, 5, WSHUB_TEXT, 0), WSHUB_STOPPED);
    CHECK_RC(wshub_room_size(server, "room", &n), WSHUB_STOPPED);
    CHECK_RC(wshub_connection_count(server, &n), WSHUB_STOPPED);
    CHECK_RC(wshub_close(server, conn, 1000, "bye"), WSHUB_STOPPED);
    CHECK_RC(wshub_publish(server, "room", (const uint8_t *)"1", 1, NULL), WSHUB_STOPPED);
    CHECK_RC(wshub_conn_set_user_data(server, conn, &n), WSHUB_STOPPED);
    CHECK(wshub_conn_user_data(server, conn) == NULL);
    CHECK_RC(wshub_conn_identity(server, conn, buf, sizeof buf, &n), WSHUB_NO_SUCH_CONNECTION);
    CHECK(wshub_local_port(server) != 0);
    wshub_stop(server);
}

/* A pull-mode server: events with the wrong kind, answers twice, then stopped. */
static void polling_server(void) {
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    wshub_event *event = NULL;
    size_t n = 0;
    int fd = -1, sock;
    CHECK_RC(wshub_config_set_bind(config, "127.0.0.1:0"), WSHUB_OK);
    CHECK_RC(wshub_config_set_upgrade_timeout_ms(config, 1000), WSHUB_OK);
    CHECK_RC(wshub_start_polling(config, &server), WSHUB_OK);
    wshub_config_free(config);
    if (server == NULL)
        return;
    CHECK_RC(wshub_event_fd(server, &fd), WSHUB_OK);
    CHECK(fd >= 0);
    CHECK_RC(wshub_poll_event(server, 0, &event), WSHUB_TIMEOUT);
    CHECK(event == NULL);
    CHECK_RC(wshub_poll_event(server, 10, &event), WSHUB_TIMEOUT);

    sock = start_websocket(wshub_local_port(server));
    CHECK_RC(wshub_poll_event(server, 10000, &event), WSHUB_OK);
    CHECK(wshub_event_get_kind(event) == WSHUB_EVENT_UPGRADE);
    CHECK(strcmp(wshub_request_path(wshub_event_request(event)), "/ws") == 0);
    CHECK(wshub_request_header(wshub_event_request(event), "sec-websocket-version") != NULL);
    CHECK(wshub_request_header(wshub_event_request(event), "X-Missing") == NULL);
    CHECK(wshub_event_data(event, &n) != NULL && n == 0);
    CHECK(wshub_request_user(wshub_event_request(event)) == NULL); /* auth off */
    CHECK_RC(wshub_request_set_identity(wshub_event_request(event), "alice"), WSHUB_OK);
    CHECK_RC(wshub_event_accept(event), WSHUB_OK);
    CHECK_RC(wshub_event_accept(event), WSHUB_ALREADY_ANSWERED);
    CHECK_RC(wshub_event_reject(event, 403), WSHUB_ALREADY_ANSWERED);
    wshub_event_free(event);
    finish_websocket(sock);

    CHECK_RC(wshub_poll_event(server, 10000, &event), WSHUB_OK);
    CHECK(wshub_event_get_kind(event) == WSHUB_EVENT_CONNECT);
    CHECK_RC(wshub_event_accept(event), WSHUB_WRONG_MODE);
    CHECK_RC(wshub_event_reject(event, 403), WSHUB_WRONG_MODE);
    CHECK(wshub_event_close_code(event) == 0);
    CHECK(wshub_event_conn_user_data(event) == NULL);
    {
        char name[3];
        CHECK_RC(wshub_conn_identity(server, wshub_event_conn(event), name, sizeof name, &n), WSHUB_BUFFER_TOO_SMALL);
        CHECK(n == 5);
    }
    CHECK_RC(wshub_conn_set_user_data(server, wshub_event_conn(event), &fd), WSHUB_OK);
    wshub_event_free(event);

    if (sock >= 0)
        close(sock);
    CHECK_RC(wshub_poll_event(server, 10000, &event), WSHUB_OK);
    CHECK(wshub_event_get_kind(event) == WSHUB_EVENT_CLOSE);
    CHECK(wshub_event_close_code(event) == 1006);
    CHECK(wshub_event_conn_user_data(event) == &fd);
    CHECK(wshub_event_request(event) == NULL);
    wshub_event_free(event);

    /* An upgrade nobody answers is refused with 503 after the upgrade timeout;
       answering it afterwards says so. */
    sock = start_websocket(wshub_local_port(server));
    expect_status(sock, "HTTP/1.1 503");
    CHECK_RC(wshub_poll_event(server, 10000, &event), WSHUB_OK);
    CHECK(wshub_event_get_kind(event) == WSHUB_EVENT_UPGRADE);
    CHECK_RC(wshub_event_accept(event), WSHUB_ALREADY_ANSWERED);
    wshub_event_free(event);
    if (sock >= 0)
        close(sock);

    /* Freeing an unanswered upgrade event refuses it at once. */
    sock = start_websocket(wshub_local_port(server));
    CHECK_RC(wshub_poll_event(server, 10000, &event), WSHUB_OK);
    CHECK(wshub_event_get_kind(event) == WSHUB_EVENT_UPGRADE);
    wshub_event_free(event);
    expect_status(sock, "HTTP/1.1 503");
    if (sock >= 0)
        close(sock);

    /* A rejected upgrade gets the application's status. */
    sock = start_websocket(wshub_local_port(server));
    CHECK_RC(wshub_poll_event(server, 10000, &event), WSHUB_OK);
    CHECK_RC(wshub_event_reject(event, 401), WSHUB_OK);
    wshub_event_free(event);
    expect_status(sock, "HTTP/1.1 401");
    if (sock >= 0)
        close(sock);

    CHECK_RC(wshub_shutdown(server), WSHUB_OK);
    CHECK_RC(wshub_poll_event(server, 0, &event), WSHUB_STOPPED);
    CHECK_RC(wshub_poll_event(server, -1, &event), WSHUB_STOPPED); /* never blocks once stopped */
    CHECK_RC(wshub_send(server, 1, HELLO, 5, WSHUB_TEXT), WSHUB_STOPPED);
    wshub_stop(server);
}

static void sleep_ms(long ms) {
    struct timespec t;
    t.tv_sec = ms / 1000;
    t.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&t, NULL);
}

/* Sends one masked text frame (clients must mask). */
static void send_text(int fd, const char *text) {
    unsigned char frame[2 + 4 + 125];
    size_t len = strlen(text), i;
    frame[0] = 0x81;
    frame[1] = (unsigned char)(0x80 | len);
    memcpy(frame + 2, "\x11\x22\x33\x44", 4);
    for (i = 0; i < len; i++)
        frame[6 + i] = (unsigned char)(text[i] ^ frame[2 + i % 4]);
    CHECK(fd >= 0 && write(fd, frame, 6 + len) == (ssize_t)(6 + len));
}

/* Takes the next event, which must be a text message equal to `want`. */
static void expect_message(wshub_server *server, const char *want) {
    wshub_event *event = NULL;
    size_t n = 0;
    const uint8_t *data;
    CHECK_RC(wshub_poll_event(server, 10000, &event), WSHUB_OK);
    CHECK(wshub_event_get_kind(event) == WSHUB_EVENT_MESSAGE);
    data = wshub_event_data(event, &n);
    if (data == NULL || n != strlen(want) || memcmp(data, want, n) != 0) {
        fprintf(stderr, "expected message %s, got %.*s\n", want, (int)n, data ? (const char *)data : "");
        failures++;
    }
    wshub_event_free(event);
}

/* A full queue makes connection threads wait, loses nothing, and does not
   keep the server from stopping. */
static void bounded_queue(void) {
    static const char *const texts[] = {"m0", "m1", "m2", "m3", "m4", "m5"};
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    wshub_event *event = NULL;
    int sock, i, closes = 0;
    CHECK_RC(wshub_config_set_bind(config, "127.0.0.1:0"), WSHUB_OK);
    CHECK_RC(wshub_config_set_event_queue_capacity(config, 2), WSHUB_OK);
    CHECK_RC(wshub_config_set_shutdown_timeout_ms(config, 500), WSHUB_OK);
    CHECK_RC(wshub_config_set_close_timeout_ms(config, 500), WSHUB_OK);
    CHECK_RC(wshub_start_polling(config, &server), WSHUB_OK);
    wshub_config_free(config);
    if (server == NULL)
        return;
    sock = start_websocket(wshub_local_port(server));
    CHECK_RC(wshub_poll_event(server, 10000, &event), WSHUB_OK);
    CHECK_RC(wshub_event_accept(event), WSHUB_OK);
    wshub_event_free(event);
    finish_websocket(sock);
    CHECK_RC(wshub_poll_event(server, 10000, &event), WSHUB_OK);
    CHECK(wshub_event_get_kind(event) == WSHUB_EVENT_CONNECT);
    wshub_event_free(event);

    /* Six messages through a queue of two, in order. */
    for (i = 0; i < 6; i++)
        send_text(sock, texts[i]);
    sleep_ms(200); /* let the reader fill the queue and wait */
    for (i = 0; i < 6; i++)
        expect_message(server, texts[i]);

    /* A reader waiting on the full queue does not hold up the stop. */
    for (i = 0; i < 6; i++)
        send_text(sock, texts[i]);
    sleep_ms(200);
    CHECK_RC(wshub_shutdown(server), WSHUB_OK);
    for (i = 0; i < 100 && wshub_poll_event(server, 0, &event) == WSHUB_OK; i++) {
        closes += wshub_event_get_kind(event) == WSHUB_EVENT_CLOSE;
        wshub_event_free(event);
    }
    CHECK(closes == 1);
    if (sock >= 0)
        close(sock);
    wshub_stop(server);
}

int main(void) {
    null_everything();
    callback_server();
    polling_server();
    bounded_queue();
    if (failures != 0) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
