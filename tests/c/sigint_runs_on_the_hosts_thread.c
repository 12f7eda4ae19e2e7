/*
 * A host's signal handler runs on the host's own thread, never on one of
 * wshub's: with 100 connections open (200 wshub threads), main blocks
 * SIGINT, the test sends it to the process, and main then waits for it with
 * sigsuspend. Every wshub thread blocks it, so it stays pending until main
 * unblocks it; a wshub thread that did not would take it at once.
 * Driven by tests/c_api_lifetimes_are_safe.rs: prints "listening on ..."
 * when SIGINT may be sent, then reads a line from stdin once it was.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <signal.h>
#include <stdio.h>

#include "wshub.h"
#include "c_test_util.h"

#define CONNECTIONS 100

static pthread_t main_thread;
static volatile sig_atomic_t handled = 0, on_main = 0;

static void on_sigint(int sig) {
    (void)sig;
    on_main = pthread_equal(pthread_self(), main_thread) ? 1 : 0;
    handled = 1;
}

int main(void) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    struct sigaction action;
    sigset_t block, old;
    int fds[CONNECTIONS], i, early;
    size_t open_count = 0;
    char line[16];

    main_thread = pthread_self();
    memset(&action, 0, sizeof action);
    action.sa_handler = on_sigint;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, NULL);
    wshub_config_set_bind(config, "127.0.0.1:0");
    if (wshub_start(config, &callbacks, NULL, &server) != WSHUB_OK) /* started with SIGINT unblocked */
        return 2;
    wshub_config_free(config);
    for (i = 0; i < CONNECTIONS; i++)
        if ((fds[i] = ws_open(wshub_local_port(server))) < 0)
            return 3;
    wshub_connection_count(server, &open_count);

    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    printf("listening on 127.0.0.1:%u\n", (unsigned)wshub_local_port(server));
    fflush(stdout);
    if (fgets(line, sizeof line, stdin) == NULL) /* the test sent SIGINT */
        return 4;
    early = handled; /* taken by some other thread meanwhile */
    if (!early)
        sigsuspend(&old);
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    for (i = 0; i < CONNECTIONS; i++)
        close(fds[i]);
    wshub_stop(server);
    if (early || !handled || !on_main || open_count != CONNECTIONS) {
        fprintf(stderr, "handled before main unblocked it=%d on main=%d connections=%zu\n", early, (int)on_main,
                open_count);
        return 1;
    }
    printf("sigint on the host's thread ok\n");
    return 0;
}
