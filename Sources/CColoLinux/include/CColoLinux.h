#ifndef COLO_CCOLOLINUX_H
#define COLO_CCOLOLINUX_H

/// Starts loading the cache line at `address` without waiting for it (a hint; never faults).
static inline void CColoLinux_prefetch(const void *address) {
    __builtin_prefetch(address, 0, 3);
}

/// As `CColoLinux_prefetch`, for a line about to be written.
static inline void CColoLinux_prefetchForWrite(const void *address) {
    __builtin_prefetch(address, 1, 3);
}

// MARK: TUN/TAP (ColoPorts.TapDevice)
//
// Swift cannot call the variadic ioctl(2) nor fill `struct ifreq`'s union, so the TUN ioctls live here. Each returns
// 0 (or a non-negative value) on success and -errno on failure, so Swift never reads the thread's errno after another
// call may have changed it. EINTR is retried here: none of these calls has a partial effect to undo.

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/// The flags `TUNSETIFF` takes, as plain ints Swift can import (the kernel's are macros over `short`).
static const int CColoLinux_tunFlagTun = IFF_TUN;
static const int CColoLinux_tunFlagTap = IFF_TAP;
static const int CColoLinux_tunFlagNoPacketInfo = IFF_NO_PI;
static const int CColoLinux_tunFlagVnetHeader = IFF_VNET_HDR;
static const int CColoLinux_tunFlagPersist = IFF_PERSIST;
/// Room for an interface name including its terminating NUL.
static const int CColoLinux_interfaceNameSize = IFNAMSIZ;

/// Opens the TUN/TAP clone device non-blocking and close-on-exec; returns the descriptor or -errno.
static inline int CColoLinux_tunOpen(void) {
    int fd;
    do {
        fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

/// TUNSETIFF: attaches `fd` to the interface `name` (created when absent; "colo%d" lets the kernel pick the number)
/// with `flags` (CColoLinux_tunFlag…). The name the kernel used is copied to `actualName` (IFNAMSIZ bytes).
static inline int CColoLinux_tunSetInterface(int fd, const char *name, int flags, char *actualName) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    if (strlen(name) >= IFNAMSIZ) return -ENAMETOOLONG;
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    request.ifr_flags = (short)flags;
    int result;
    do {
        result = ioctl(fd, TUNSETIFF, &request);
    } while (result < 0 && errno == EINTR);
    if (result < 0) return -errno;
    memcpy(actualName, request.ifr_name, IFNAMSIZ);
    actualName[IFNAMSIZ - 1] = 0;
    return 0;
}

/// TUNGETIFF: the flags of the interface `fd` is attached to (IFF_PERSIST included), or -errno.
static inline int CColoLinux_tunGetFlags(int fd) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    int result;
    do {
        result = ioctl(fd, TUNGETIFF, &request);
    } while (result < 0 && errno == EINTR);
    return result < 0 ? -errno : (int)(unsigned short)request.ifr_flags;
}

/// TUNSETVNETHDRSZ: the length of the virtio-net header before each frame (10, or 12 with num_buffers).
static inline int CColoLinux_tunSetVnetHeaderSize(int fd, int size) {
    int result;
    do {
        result = ioctl(fd, TUNSETVNETHDRSZ, &size);
    } while (result < 0 && errno == EINTR);
    return result < 0 ? -errno : 0;
}

/// TUNGETVNETHDRSZ: the current virtio-net header length, or -errno.
static inline int CColoLinux_tunGetVnetHeaderSize(int fd) {
    int size = 0;
    int result;
    do {
        result = ioctl(fd, TUNGETVNETHDRSZ, &size);
    } while (result < 0 && errno == EINTR);
    return result < 0 ? -errno : size;
}

/// The offloads a reader of a vnet_hdr device can take (TUNSETOFFLOAD): partial checksums, and TCP segmentation
/// (IPv4, IPv6, with ECN) so that the stack hands over segments of up to 64 KiB described by the virtio-net header.
static const unsigned int CColoLinux_tunOffloadChecksum = TUN_F_CSUM;
static const unsigned int CColoLinux_tunOffloadTCPSegmentation = TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;

/// TUNSETOFFLOAD: which offloads (TUN_F_CSUM, TUN_F_TSO4, …) the reader accepts; 0 makes the kernel hand over only
/// complete, checksummed frames.
static inline int CColoLinux_tunSetOffload(int fd, unsigned int offloads) {
    int result;
    do {
        result = ioctl(fd, TUNSETOFFLOAD, (unsigned long)offloads);
    } while (result < 0 && errno == EINTR);
    return result < 0 ? -errno : 0;
}

/// TUNSETPERSIST: whether the interface outlives the last descriptor attached to it.
static inline int CColoLinux_tunSetPersist(int fd, int persistent) {
    int result;
    do {
        result = ioctl(fd, TUNSETPERSIST, (unsigned long)(persistent ? 1 : 0));
    } while (result < 0 && errno == EINTR);
    return result < 0 ? -errno : 0;
}

/// setns(2) into the network namespace at `path` (e.g. /run/netns/NAME), for the calling thread only: ports opened
/// afterwards (NFQUEUE sockets, TUN devices) belong to that namespace. Returns 0 or -errno.
/// (Declared here: glibc shows setns and CLONE_NEWNET only under _GNU_SOURCE.)
extern int setns(int fd, int nstype);
static inline int CColoLinux_enterNetworkNamespace(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int result = setns(fd, 0x40000000 /* CLONE_NEWNET */);
    int saved = errno;
    close(fd);
    return result < 0 ? -saved : 0;
}

#endif
