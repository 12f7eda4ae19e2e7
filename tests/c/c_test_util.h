/*
 * Helpers shared by the C lifetime tests: a raw WebSocket client on loopback
 * (the server under test is the only WebSocket code in these programs).
 */
#ifndef WSHUB_C_TEST_UTIL_H
#define WSHUB_C_TEST_UTIL_H

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char ws_request[] = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                 "Sec-WebSocket-Version: 13\r\n\r\n";

/* A connected TCP socket to 127.0.0.1:port, or -1. */
static inline int tcp_connect(uint16_t port) {
    struct sockaddr_in addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends the upgrade request and reads the 101's head, byte by byte so that
   a first message sent with it stays unread; the socket, or -1. */
static inline int ws_open(uint16_t port) {
    char c;
    unsigned int tail = 0, i;
    int fd = tcp_connect(port);
    if (fd < 0)
        return -1;
    if (write(fd, ws_request, sizeof ws_request - 1) != (ssize_t)(sizeof ws_request - 1)) {
        close(fd);
        return -1;
    }
    for (i = 0; i < 4096 && tail != 0x0d0a0d0a; i++) {
        if (read(fd, &c, 1) != 1) {
            close(fd);
            return -1;
        }
        tail = (tail << 8) | (unsigned char)c;
    }
    return fd;
}

/* Sends a masked text frame of at most 125 bytes; 0 on success. */
static inline int ws_send_text(int fd, const char *text) {
    unsigned char frame[2 + 4 + 125];
    size_t len = strlen(text), i;
    if (len > 125)
        return -1;
    frame[0] = 0x81;
    frame[1] = (unsigned char)(0x80 | len);
    frame[2] = 1, frame[3] = 2, frame[4] = 3, frame[5] = 4;
    for (i = 0; i < len; i++)
        frame[6 + i] = (unsigned char)(text[i] ^ frame[2 + i % 4]);
    return write(fd, frame, 6 + len) == (ssize_t)(6 + len) ? 0 : -1;
}

/* Reads exactly `len` bytes; 0 on success. */
static inline int read_full(int fd, unsigned char *buf, size_t len) {
    size_t got = 0;
    ssize_t n;
    while (got < len) {
        n = read(fd, buf + got, len - got);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

/* Reads the next unmasked text frame of at most 65535 bytes into `buf`
   (NUL-terminated, at most `size` - 1 bytes kept); its length, or -1. */
static inline long ws_read_text(int fd, char *buf, size_t size) {
    unsigned char head[4];
    size_t len, keep, i;
    char c;
    if (read_full(fd, head, 2) != 0 || (head[0] & 0x0f) != 1)
        return -1;
    len = head[1] & 0x7f;
    if (len == 126) {
        if (read_full(fd, head + 2, 2) != 0)
            return -1;
        len = ((size_t)head[2] << 8) | head[3];
    } else if (len == 127) {
        return -1;
    }
    keep = len < size ? len : size - 1;
    if (read_full(fd, (unsigned char *)buf, keep) != 0)
        return -1;
    for (i = keep; i < len; i++)
        if (read_full(fd, (unsigned char *)&c, 1) != 0)
            return -1;
    buf[keep] = '\0';
    return (long)len;
}

/* An absolute CLOCK_REALTIME deadline `seconds` from now. */
static inline struct timespec deadline_in(int seconds) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += seconds;
    return t;
}

/* True once `port` refuses connections (the server is gone), polling for at
   most `seconds`. */
static inline int refused_within(uint16_t port, int seconds) {
    struct timespec pause = {0, 10 * 1000 * 1000};
    int i, fd;
    for (i = 0; i < seconds * 100; i++) {
        fd = tcp_connect(port);
        if (fd < 0)
            return 1;
        close(fd);
        nanosleep(&pause, NULL);
    }
    return 0;
}

/* How many file descriptors the process has open (-1 when /proc is not there). */
static inline int open_fds(void) {
    DIR *dir = opendir("/proc/self/fd");
    int n = 0;
    if (dir == NULL)
        return -1;
    while (readdir(dir) != NULL)
        n++;
    closedir(dir);
    return n;
}

#endif
