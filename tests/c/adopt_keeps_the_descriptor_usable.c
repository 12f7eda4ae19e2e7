/*
 * wshub_adopt and the host's descriptor. On success wshub takes the
 * descriptor itself: the host's number stays the open socket, so the host
 * can still remove it from its epoll set (EPOLL_CTL_DEL used to fail: the
 * number had been closed while the socket lived on in a copy, still
 * registered). On any error the descriptor is the host's, open, with
 * O_NONBLOCK as it was.
 * Run under ASan + UBSan by tests/c_api_lifetimes_are_safe.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <stdio.h>
#include <sys/epoll.h>

#include "wshub.h"
#include "c_test_util.h"

static int failures = 0;

#define EXPECT(cond)                                                        \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond);     \
            failures++;                                                     \
        }                                                                   \
    } while (0)

/* A connected pair on loopback through a listener of the host's own: the
   host's accepted end (non-blocking) in *accepted, the client's returned. */
static int pair(int listener, uint16_t port, int *accepted) {
    int client = tcp_connect(port);
    *accepted = accept(listener, NULL, NULL);
    if (client < 0 || *accepted < 0)
        return -1;
    fcntl(*accepted, F_SETFL, fcntl(*accepted, F_GETFL) | O_NONBLOCK);
    return client;
}

static int nonblocking_and_open(int fd) {
    int flags = fcntl(fd, F_GETFL);
    return flags >= 0 && (flags & O_NONBLOCK) != 0;
}

int main(void) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    struct sockaddr_in addr;
    socklen_t addr_len = sizeof addr;
    struct epoll_event event;
    char head[512], too_much[9000];
    int listener, ep, client, fd, n;
    uint16_t port;

    listener = socket(AF_INET, SOCK_STREAM, 0);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 16) != 0 ||
        getsockname(listener, (struct sockaddr *)&addr, &addr_len) != 0)
        return 2;
    port = ntohs(addr.sin_port);
    wshub_config_set_bind(config, "");
    if (wshub_start(config, &callbacks, NULL, &server) != WSHUB_OK)
        return 3;
    wshub_config_free(config);
    ep = epoll_create1(0);

    /* Success: the host's number stays the socket and can leave the epoll set. */
    client = pair(listener, port, &fd);
    EXPECT(client >= 0);
    memset(&event, 0, sizeof event);
    event.events = EPOLLIN;
    EXPECT(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &event) == 0);
    EXPECT(wshub_adopt(server, fd, NULL, 0) == WSHUB_OK);
    EXPECT(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) == 0);
    EXPECT(write(client, ws_request, sizeof ws_request - 1) == (ssize_t)(sizeof ws_request - 1));
    n = (int)read(client, head, sizeof head - 1);
    head[n > 0 ? n : 0] = '\0';
    EXPECT(strstr(head, " 101 ") != NULL);
    EXPECT(epoll_wait(ep, &event, 1, 0) == 0);
    close(client);

    /* Errors: the descriptor stays the host's, open and non-blocking. */
    client = pair(listener, port, &fd);
    memset(too_much, 'x', sizeof too_much);
    EXPECT(wshub_adopt(server, fd, (const uint8_t *)too_much, sizeof too_much) == WSHUB_INVALID_ARGUMENT);
    EXPECT(nonblocking_and_open(fd));
    EXPECT(wshub_shutdown(server) == WSHUB_OK);
    EXPECT(wshub_adopt(server, fd, NULL, 0) == WSHUB_STOPPED);
    EXPECT(nonblocking_and_open(fd));
    EXPECT(close(fd) == 0); /* still the host's to close */
    close(client);

    wshub_stop(server);
    close(ep);
    close(listener);
    if (failures != 0)
        return 1;
    printf("adopt keeps the descriptor usable ok\n");
    return 0;
}
