/*
 * The log callback and re-entry: wshub_set_log_callback from inside the
 * callback returns WSHUB_WRONG_MODE (it used to hang), and a wshub call that
 * logs from inside the callback, while another thread waits to swap the
 * callback, returns (it used to deadlock: the callback held wshub's lock).
 * Run under ASan + UBSan by tests/c_host_gets_logs_and_counters.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>

#include "wshub.h"
#include "c_test_util.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int in_callback = 0, swapped = 0, nested_lines = 0;
static wshub_result reentry = WSHUB_OK, nested_start = WSHUB_OK;

static void quiet(void *ud, wshub_log_level level, const char *target, const char *message) {
    (void)ud, (void)level, (void)target, (void)message;
}

/* A refused start: it logs a warning on the calling thread. */
static wshub_result refused_start(void) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    wshub_result rc;
    wshub_config_set_hub_queue(config, 0);
    rc = wshub_start(config, &callbacks, NULL, &server);
    wshub_config_free(config);
    return rc;
}

static void on_log(void *ud, wshub_log_level level, const char *target, const char *message) {
    struct timespec deadline, pause = {0, 200 * 1000 * 1000};
    (void)ud, (void)level, (void)target, (void)message;
    pthread_mutex_lock(&lock);
    if (in_callback) { /* the nested line: must never get here */
        nested_lines++;
        pthread_mutex_unlock(&lock);
        return;
    }
    in_callback = 1;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);

    reentry = wshub_set_log_callback(WSHUB_LOG_WARN, quiet, NULL);
    /* Let the swapping thread start waiting for this call to return. */
    nanosleep(&pause, NULL);
    nested_start = refused_start(); /* logs from inside the callback */

    deadline = deadline_in(1);
    pthread_mutex_lock(&lock);
    /* The swap cannot finish while this runs. */
    pthread_cond_timedwait(&changed, &lock, &deadline);
    in_callback = 2;
    pthread_mutex_unlock(&lock);
}

static void *swapper(void *arg) {
    struct timespec deadline = deadline_in(20);
    (void)arg;
    pthread_mutex_lock(&lock);
    while (in_callback == 0 && pthread_cond_timedwait(&changed, &lock, &deadline) == 0) {
    }
    pthread_mutex_unlock(&lock);
    wshub_set_log_callback(WSHUB_LOG_WARN, quiet, NULL); /* waits for on_log */
    pthread_mutex_lock(&lock);
    swapped = in_callback == 2 ? 1 : -1;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(void) {
    struct timespec deadline;
    pthread_t thread;
    wshub_result outer;
    int ok;

    wshub_set_log_callback(WSHUB_LOG_WARN, on_log, NULL);
    pthread_create(&thread, NULL, swapper, NULL);
    outer = refused_start(); /* its warning runs on_log on this thread */
    deadline = deadline_in(20);
    pthread_mutex_lock(&lock);
    while (swapped == 0 && pthread_cond_timedwait(&changed, &lock, &deadline) == 0) {
    }
    ok = swapped == 1 && reentry == WSHUB_WRONG_MODE && nested_start == WSHUB_INVALID_CONFIG &&
         outer == WSHUB_INVALID_CONFIG && nested_lines == 0;
    pthread_mutex_unlock(&lock);
    pthread_join(thread, NULL);
    if (!ok) {
        fprintf(stderr, "swapped=%d reentry=%s nested=%s outer=%s nested_lines=%d\n", swapped,
                wshub_error_message(reentry), wshub_error_message(nested_start), wshub_error_message(outer),
                nested_lines);
        return 1;
    }
    printf("log callback reentry ok\n");
    return 0;
}
