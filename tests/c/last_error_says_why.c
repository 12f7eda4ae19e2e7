/*
 * wshub_last_error: after a failed call, the calling thread reads why, as a
 * sentence: a bad config value, a TLS file that does not parse, a bind that
 * fails, callbacks not from WSHUB_CALLBACKS_INIT. It is per thread, cut to
 * the buffer like snprintf, and empty before any failure.
 * Run under ASan + UBSan by tests/c_api_lifetimes_are_safe.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "wshub.h"
#include "c_test_util.h"

static int failures = 0;

#define EXPECT(cond, what)                                                  \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, what);      \
            failures++;                                                     \
        }                                                                   \
    } while (0)

/* Starts with `config` and checks the code and that the last error holds `needle`. */
static void expect_failure(wshub_config *config, wshub_result want, const char *needle) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_server *server = NULL;
    char why[512];
    wshub_result rc = wshub_start(config, &callbacks, NULL, &server);
    size_t n = wshub_last_error(why, sizeof why);
    if (rc != want || n == 0 || strstr(why, needle) == NULL) {
        fprintf(stderr, "expected %s with \"%s\", got %s: \"%s\"\n", wshub_error_message(want), needle,
                wshub_error_message(rc), why);
        failures++;
    }
    if (rc == WSHUB_OK)
        wshub_stop(server);
}

static void *other_thread(void *arg) {
    char why[64] = "x";
    (void)arg;
    return (void *)(size_t)(wshub_last_error(why, sizeof why) == 0 && why[0] == '\0');
}

int main(void) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *first = NULL;
    char why[512], small[8], garbage_path[] = "/tmp/wshub-last-error-XXXXXX", address[64];
    void *clean = NULL;
    pthread_t thread;
    size_t full;
    int fd;

    EXPECT(wshub_last_error(why, sizeof why) == 0 && why[0] == '\0', "no failure yet, yet a last error");

    /* A bad config value. */
    wshub_config_set_bind(config, "127.0.0.1:0");
    wshub_config_set_hub_queue(config, 0);
    expect_failure(config, WSHUB_INVALID_CONFIG, "hub_queue");
    wshub_config_set_hub_queue(config, 4096);

    /* Cut to the buffer, at full length returned. */
    full = wshub_last_error(why, sizeof why);
    EXPECT(wshub_last_error(small, sizeof small) == full && strlen(small) == sizeof small - 1 &&
               strncmp(small, why, sizeof small - 1) == 0,
           "not cut like snprintf");

    /* A TLS file that does not parse. */
    fd = mkstemp(garbage_path);
    EXPECT(fd >= 0 && write(fd, "not a certificate\n", 18) == 18, "temp file");
    close(fd);
    wshub_config_set_tls_cert_file(config, garbage_path);
    wshub_config_set_tls_key_file(config, garbage_path);
    expect_failure(config, WSHUB_INVALID_CONFIG, garbage_path);
    unlink(garbage_path);
    wshub_config_free(config);

    /* A bind that fails: the port is taken by a first server. */
    config = wshub_config_new();
    wshub_config_set_bind(config, "127.0.0.1:0");
    EXPECT(wshub_start(config, &callbacks, NULL, &first) == WSHUB_OK, "first server");
    snprintf(address, sizeof address, "127.0.0.1:%u", (unsigned)wshub_local_port(first));
    wshub_config_set_bind(config, address);
    expect_failure(config, WSHUB_IO, "cannot bind");
    expect_failure(config, WSHUB_IO, address);
    wshub_stop(first);

    /* Callbacks not from WSHUB_CALLBACKS_INIT. */
    {
        wshub_server *server = NULL;
        wshub_callbacks unsized = WSHUB_CALLBACKS_INIT;
        unsized.struct_size = 0;
        wshub_config_set_bind(config, "127.0.0.1:0");
        EXPECT(wshub_start(config, &unsized, NULL, &server) == WSHUB_INVALID_ARGUMENT, "unsized callbacks");
        wshub_last_error(why, sizeof why);
        EXPECT(strstr(why, "WSHUB_CALLBACKS_INIT") != NULL, why);
    }
    wshub_config_free(config);

    /* Per thread: another thread has had no failure. */
    pthread_create(&thread, NULL, other_thread, NULL);
    pthread_join(thread, &clean);
    EXPECT(clean != NULL, "another thread's failure showed on a thread that had none");

    if (failures != 0)
        return 1;
    printf("last error says why ok\n");
    return 0;
}
