#if canImport(Glibc)
    import Glibc
#endif

/// Allocations for the big tables: mapped directly and marked for transparent huge pages.
///
/// A table of a million connections spans hundreds of megabytes; with 4 KiB pages almost every random lookup
/// also misses the TLB (and in a VM pays for a two-level page walk). 2 MiB pages remove most of that. Small
/// tables use the ordinary allocator.
enum LargeAllocation {
    static let hugePage = 2 << 20

    static func allocate<T>(_ type: T.Type, capacity: Int) -> UnsafeMutablePointer<T> {
        let bytes = capacity * MemoryLayout<T>.stride
        guard bytes >= hugePage else { return .allocate(capacity: capacity) }
        let length = (bytes + hugePage - 1) / hugePage * hugePage
        guard let region = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            region != MAP_FAILED
        else {
            return .allocate(capacity: capacity)
        }
        #if os(Linux)
            _ = madvise(region, length, 14)  // MADV_HUGEPAGE; advisory, ignored where THP is off
        #endif
        return region.bindMemory(to: T.self, capacity: capacity)
    }

    static func deallocate<T>(_ pointer: UnsafeMutablePointer<T>, capacity: Int) {
        let bytes = capacity * MemoryLayout<T>.stride
        guard bytes >= hugePage else {
            pointer.deallocate()
            return
        }
        let length = (bytes + hugePage - 1) / hugePage * hugePage
        _ = munmap(UnsafeMutableRawPointer(pointer), length)
    }
}
