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

#endif
