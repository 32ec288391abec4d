// SPDX-License-Identifier: GPL-2.0
/*
 * loadgen - the harness's own load generator, for what no packaged tool does:
 * AF_UNIX stream sockets (the reference for moving bytes between two local
 * processes) and the TCP connection rate (connect, 64 B request, 64 B reply,
 * close). Same code for both transports, so only the transport differs.
 *
 *   loadgen server unix:/path | tcp:ADDR:PORT
 *   loadgen client unix:/path | tcp:ADDR:PORT  MODE SIZE STREAMS SECONDS
 *     MODE: stream (throughput), pingpong (latency), connrate
 *
 * The client prints one JSON object. The server forks a child per connection
 * and runs until killed. The first 8 bytes of a connection say what it wants.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <time.h>
#include <unistd.h>

enum { M_STREAM = 1, M_PINGPONG = 2, M_CONNRATE = 3 };
struct hello { uint32_t mode, size; };

static void die(const char *what) { perror(what); exit(2); }

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* "unix:/path" or "tcp:addr:port" (addr may be IPv6 without brackets) */
static int make_addr(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	if (!strncmp(spec, "unix:", 5)) {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		un->sun_family = AF_UNIX;
		snprintf(un->sun_path, sizeof(un->sun_path), "%s", spec + 5);
		*len = sizeof(*un);
		return AF_UNIX;
	}
	if (strncmp(spec, "tcp:", 4))
		return -1;
	char host[128];
	snprintf(host, sizeof(host), "%s", spec + 4);
	char *colon = strrchr(host, ':');
	if (!colon)
		return -1;
	*colon = 0;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST }, *res;
	if (getaddrinfo(host, colon + 1, &hints, &res))
		return -1;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	int fam = res->ai_family;
	freeaddrinfo(res);
	return fam;
}

static int full_io(int fd, char *buf, size_t n, int writing)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = writing ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			return -1;
		}
		done += r;
	}
	return 0;
}

static void serve_one(int fd)
{
	struct hello h;
	if (full_io(fd, (char *)&h, sizeof(h), 0))
		_exit(0);
	size_t cap = h.size > 64 ? h.size : 64;
	char *buf = malloc(cap < (1 << 20) ? (1 << 20) : cap);
	if (h.mode == M_STREAM) {
		while (read(fd, buf, 1 << 20) > 0)
			;
	} else { /* pingpong and connrate: echo messages of h.size bytes */
		while (!full_io(fd, buf, h.size, 0))
			if (full_io(fd, buf, h.size, 1))
				break;
	}
	_exit(0);
}

static int server(const char *spec)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fam = make_addr(spec, &ss, &len), one = 1;
	if (fam < 0)
		return fprintf(stderr, "bad address %s\n", spec), 2;
	if (fam == AF_UNIX)
		unlink(((struct sockaddr_un *)&ss)->sun_path);
	int l = socket(fam, SOCK_STREAM, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (l < 0 || bind(l, (struct sockaddr *)&ss, len) || listen(l, 1024))
		die("listen");
	signal(SIGCHLD, SIG_IGN); /* children reaped by the kernel */
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		int fd = accept(l, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die("accept");
		}
		if (fam != AF_UNIX)
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (fork() == 0) {
			close(l);
			serve_one(fd);
		}
		close(fd);
	}
}

static int dial(const char *spec, uint32_t mode, uint32_t size)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fam = make_addr(spec, &ss, &len), one = 1;
	int fd = socket(fam, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&ss, len))
		die("connect");
	if (fam != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct hello h = { mode, size };
	if (full_io(fd, (char *)&h, sizeof(h), 1))
		die("hello");
	return fd;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static int client(const char *spec, const char *mode, uint32_t size, int streams, double seconds)
{
	char *buf = calloc(1, size > 64 ? size : 64);
	if (!strcmp(mode, "stream")) {
		int pipes[64][2];
		if (streams < 1 || streams > 64)
			return fprintf(stderr, "streams 1..64\n"), 2;
		for (int i = 0; i < streams; i++) {
			if (pipe(pipes[i]))
				die("pipe");
			if (fork() == 0) {
				int fd = dial(spec, M_STREAM, size);
				unsigned long long bytes = 0;
				double end = now() + seconds;
				while (now() < end) {
					ssize_t w = write(fd, buf, size);
					if (w <= 0)
						die("write");
					bytes += w;
				}
				close(fd);
				if (write(pipes[i][1], &bytes, sizeof(bytes)) != sizeof(bytes))
					_exit(2);
				_exit(0);
			}
		}
		double t0 = now();
		unsigned long long total = 0, b;
		for (int i = 0; i < streams; i++) {
			if (read(pipes[i][0], &b, sizeof(b)) != sizeof(b))
				return fprintf(stderr, "a stream failed\n"), 2;
			total += b;
		}
		while (wait(NULL) > 0)
			;
		double el = now() - t0;
		printf("{\"bytes\": %llu, \"seconds\": %.3f, \"gbit_per_s\": %.4f}\n", total, el, total * 8 / el / 1e9);
		return 0;
	}
	if (!strcmp(mode, "pingpong")) {
		int fd = dial(spec, M_PINGPONG, size);
		size_t cap = 1 << 20, n = 0;
		double *lat = malloc(cap * sizeof(double)), end = now() + seconds;
		while (now() < end && n < cap) {
			double t = now();
			if (full_io(fd, buf, size, 1) || full_io(fd, buf, size, 0))
				die("pingpong");
			lat[n++] = (now() - t) * 1e6;
		}
		qsort(lat, n, sizeof(double), cmp_double);
		double sum = 0;
		for (size_t i = 0; i < n; i++)
			sum += lat[i];
		printf("{\"count\": %zu, \"mean_us\": %.2f, \"p50_us\": %.2f, \"p99_us\": %.2f, \"p999_us\": %.2f}\n", n, sum / n,
		       lat[n / 2], lat[(size_t)(n * 0.99)], lat[(size_t)(n * 0.999)]);
		return 0;
	}
	if (!strcmp(mode, "connrate")) {
		unsigned long n = 0;
		double t0 = now(), end = t0 + seconds;
		while (now() < end) {
			int fd = dial(spec, M_CONNRATE, 64);
			if (full_io(fd, buf, 64, 1) || full_io(fd, buf, 64, 0))
				die("request");
			close(fd);
			n++;
		}
		printf("{\"connections\": %lu, \"per_s\": %.1f}\n", n, n / (now() - t0));
		return 0;
	}
	return fprintf(stderr, "unknown mode %s\n", mode), 2;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc == 3 && !strcmp(argv[1], "server"))
		return server(argv[2]);
	if (argc == 7 && !strcmp(argv[1], "client"))
		return client(argv[2], argv[3], (uint32_t)atoi(argv[4]), atoi(argv[5]), atof(argv[6]));
	fprintf(stderr, "usage: loadgen server ADDR | loadgen client ADDR stream|pingpong|connrate SIZE STREAMS SECONDS\n");
	return 2;
}
