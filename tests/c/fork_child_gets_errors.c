/*
 * A child forked from a process running a wshub server has none of its
 * threads: every wshub call there must fail with WSHUB_FORKED (or return
 * NULL / 0), never act on the parent's state; the parent carries on. Run
 * under ASan + UBSan by tests/c_api_lifetimes_are_safe.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "wshub.h"
#include "c_test_util.h"

static int child(wshub_server *server) {
    size_t n = 0;
    int bad = 0;
    const char *message = wshub_error_message(WSHUB_FORKED);
    bad += wshub_connection_count(server, &n) != WSHUB_FORKED;
    bad += wshub_send(server, 1, (const uint8_t *)"x", 1, WSHUB_TEXT) != WSHUB_FORKED;
    bad += wshub_join(server, 1, "room") != WSHUB_FORKED;
    bad += wshub_room_size(server, "room", &n) != WSHUB_FORKED;
    bad += wshub_local_port(server) != 0;
    {
        wshub_server_stats stats;
        char text[64];
        memset(&stats, 0, sizeof stats);
        stats.size = sizeof stats;
        bad += wshub_stats(server, &stats) != WSHUB_FORKED;
        bad += wshub_metrics_text(server, text, sizeof text, &n) != WSHUB_FORKED;
        bad += wshub_adopt(server, 0, NULL, 0) != WSHUB_FORKED;
        bad += wshub_set_log_callback(WSHUB_LOG_WARN, NULL, NULL) != WSHUB_FORKED;
    }
    bad += wshub_config_new() != NULL;
    bad += message == NULL || strstr(message, "fork") == NULL;
    bad += wshub_version() == NULL;
    wshub_stop(server); /* a no-op here: the parent's server is not the child's */
    return bad;
}

int main(void) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    size_t n = 99;
    pid_t pid;
    int status = 0, fd;
    wshub_config_set_bind(config, "127.0.0.1:0");
    if (wshub_start(config, &callbacks, NULL, &server) != WSHUB_OK)
        return 2;
    wshub_config_free(config);
    fd = ws_open(wshub_local_port(server)); /* a reader and a writer run */
    if (fd < 0)
        return 3;

    pid = fork();
    if (pid < 0)
        return 4;
    if (pid == 0)
        _exit(child(server)); /* _exit: the child must not run the parent's exit handlers */
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "child: %d failed checks (status %d)\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                status);
        return 1;
    }
    /* The parent's server works on. */
    if (wshub_connection_count(server, &n) != WSHUB_OK || n != 1)
        return 5;
    close(fd);
    wshub_stop(server);
    printf("fork child gets errors ok\n");
    return 0;
}
