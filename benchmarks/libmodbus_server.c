/* A baseline in C: N Modbus TCP servers in one process, one poll() loop, libmodbus 3.1.
 *
 *     libmodbus_server PORT_BASE COUNT [LIFETIME_S]
 *
 * Built by benchmarks/cserver.py with gcc and Debian's libmodbus-dev (scripts/test installs
 * it). Every server answers from one shared register map (1,000 of each table), as the
 * minimal uvloop responder does: what is left is the cost of libmodbus's framing and reply
 * and of the syscalls, the least a C server built on the common library pays per request.
 * libmodbus reads one frame per modbus_receive(): pipelined frames in one segment are
 * answered one receive at a time (it reads the header, then the rest, with two recv calls).
 * Prints "ready" once every port listens; exits on SIGTERM, on end of stdin, or after
 * LIFETIME_S seconds.
 */
#include <errno.h>
#include <modbus.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 4096

static volatile sig_atomic_t stopping = 0;

static void on_term(int signo) {
    (void)signo;
    stopping = 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s PORT_BASE COUNT [LIFETIME_S]\n", argv[0]);
        return 2;
    }
    int port_base = atoi(argv[1]);
    int count = atoi(argv[2]);
    double lifetime = argc > 3 ? atof(argv[3]) : 3600.0;
    if (count < 1 || count > 10000 || port_base < 1 || port_base + count > 65536) {
        fprintf(stderr, "bad PORT_BASE or COUNT\n");
        return 2;
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGPIPE, SIG_IGN);

    modbus_mapping_t *map = modbus_mapping_new(1000, 1000, 1000, 1000);
    if (map == NULL) {
        fprintf(stderr, "modbus_mapping_new: %s\n", modbus_strerror(errno));
        return 1;
    }
    /* One context per listener; a client's socket is set on its listener's context before
     * each receive and reply (libmodbus keeps no other per-connection state on TCP). */
    modbus_t **contexts = calloc((size_t)count, sizeof *contexts);
    int total = count + MAX_CLIENTS + 1;
    struct pollfd *fds = calloc((size_t)total, sizeof *fds);
    int *owner = calloc((size_t)total, sizeof *owner); /* fds[i] -> its listener's index */
    if (contexts == NULL || fds == NULL || owner == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (int i = 0; i < count; i++) {
        contexts[i] = modbus_new_tcp("127.0.0.1", port_base + i);
        int listener = contexts[i] ? modbus_tcp_listen(contexts[i], 64) : -1;
        if (listener < 0) {
            fprintf(stderr, "listen on port %d: %s\n", port_base + i, modbus_strerror(errno));
            return 1;
        }
        fds[i].fd = listener;
        fds[i].events = POLLIN;
        owner[i] = i;
    }
    fds[count].fd = STDIN_FILENO; /* end of stdin: the parent is gone */
    fds[count].events = POLLIN;
    int used = count + 1;
    printf("ready\n");
    fflush(stdout);

    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    double deadline = now_s() + lifetime;
    while (!stopping && now_s() < deadline) {
        int ready = poll(fds, (nfds_t)used, 1000);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            perror("poll");
            return 1;
        }
        for (int i = 0; i < used && ready > 0; i++) {
            if (fds[i].revents == 0)
                continue;
            ready--;
            if (i == count) {
                char sink[64];
                if (read(STDIN_FILENO, sink, sizeof sink) <= 0)
                    stopping = 1;
                continue;
            }
            modbus_t *ctx = contexts[owner[i]];
            if (i < count) {
                int listener = fds[i].fd;
                int client = modbus_tcp_accept(ctx, &listener);
                modbus_set_socket(ctx, listener);
                if (client >= 0 && used < total) {
                    fds[used].fd = client;
                    fds[used].events = POLLIN;
                    fds[used].revents = 0;
                    owner[used] = owner[i];
                    used++;
                } else if (client >= 0) {
                    close(client);
                }
                continue;
            }
            modbus_set_socket(ctx, fds[i].fd);
            int length = modbus_receive(ctx, query);
            if (length > 0) {
                modbus_reply(ctx, query, length, map);
            } else if (length < 0) {
                close(fds[i].fd);
                used--;
                fds[i] = fds[used];
                owner[i] = owner[used];
                i--; /* the moved entry's revents are looked at next */
            }
        }
    }
    for (int i = count + 1; i < used; i++)
        close(fds[i].fd);
    for (int i = 0; i < count; i++) {
        close(fds[i].fd);
        modbus_free(contexts[i]);
    }
    modbus_mapping_free(map);
    return 0;
}
