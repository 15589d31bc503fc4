/*
 * The "direct path" baseline of Tools/bench-qemu.sh: an endpoint with colo-compare's three chardev sockets
 * (primary_in, secondary_in, outdev) that does no work at all. Bytes read from primary_in are written to outdev
 * unchanged (QEMU's framing passes through: with identical replicas that is exactly what a comparer releases);
 * secondary_in is read and discarded. It bounds what the load generator and loopback TCP can carry on this
 * machine, so a comparer's rate can be read against the harness's own ceiling.
 *
 *   cc -O2 -o direct-forward Tools/direct-forward.c && ./direct-forward PORT   # listens on PORT, PORT+1, PORT+2
 *   ./direct-forward --unix DIR     # listens on the Unix sockets DIR/primary, DIR/secondary and DIR/outdev
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum { PRIMARY, SECONDARY, OUTDEV, SIDES };

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    struct sockaddr_in address;
    if (fd < 0) {
        perror("direct-forward: socket");
        exit(1);
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons((unsigned short)port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0 || listen(fd, 4) != 0) {
        fprintf(stderr, "direct-forward: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
        exit(1);
    }
    return fd;
}

static int listen_unix(const char *directory, const char *name)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un address;
    if (fd < 0) {
        perror("direct-forward: socket");
        exit(1);
    }
    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    if (snprintf(address.sun_path, sizeof address.sun_path, "%s/%s", directory, name) >= (int)sizeof address.sun_path) {
        fprintf(stderr, "direct-forward: %s/%s is longer than a Unix socket path may be\n", directory, name);
        exit(2);
    }
    unlink(address.sun_path);
    if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0 || listen(fd, 4) != 0) {
        fprintf(stderr, "direct-forward: cannot listen on %s: %s\n", address.sun_path, strerror(errno));
        exit(1);
    }
    return fd;
}

/* Writes all of buf to fd (blocking); 0 when the peer went away. */
static int write_all(int fd, const char *buf, size_t length)
{
    while (length > 0) {
        ssize_t n = write(fd, buf, length);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        buf += n;
        length -= (size_t)n;
    }
    return 1;
}

int main(int argc, char **argv)
{
    static char buffer[1 << 16];
    int listeners[SIDES], peers[SIDES] = {-1, -1, -1};
    static const char *const names[SIDES] = {"primary", "secondary", "outdev"};
    int unix_sockets = argc == 3 && strcmp(argv[1], "--unix") == 0;
    int base = argc == 2 ? atoi(argv[1]) : 0;
    if (!unix_sockets && (base <= 0 || base > 65533)) {
        fprintf(stderr, "usage: direct-forward PORT (listens on 127.0.0.1 PORT, PORT+1, PORT+2)\n"
                        "       direct-forward --unix DIR (listens on DIR/primary, DIR/secondary, DIR/outdev)\n");
        return 2;
    }
    for (int side = 0; side < SIDES; side++)
        listeners[side] = unix_sockets ? listen_unix(argv[2], names[side]) : listen_on(base + side);
    for (;;) {
        struct pollfd fds[SIDES];
        for (int side = 0; side < SIDES; side++) {
            fds[side].fd = peers[side] >= 0 ? peers[side] : listeners[side];
            fds[side].events = POLLIN;
            fds[side].revents = 0;
        }
        if (poll(fds, SIDES, -1) < 0 && errno != EINTR) {
            perror("direct-forward: poll");
            return 1;
        }
        for (int side = 0; side < SIDES; side++) {
            if (fds[side].revents == 0)
                continue;
            if (peers[side] < 0) {
                int one = 1;
                peers[side] = accept(listeners[side], NULL, NULL);
                if (peers[side] >= 0 && !unix_sockets)
                    setsockopt(peers[side], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                continue;
            }
            ssize_t n = read(peers[side], buffer, sizeof buffer);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                close(peers[side]);
                peers[side] = -1;
                continue;
            }
            if (side == PRIMARY && peers[OUTDEV] >= 0 && !write_all(peers[OUTDEV], buffer, (size_t)n)) {
                close(peers[OUTDEV]);
                peers[OUTDEV] = -1;
            }
        }
    }
}
