#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Why a ``NetfilterQueue`` operation failed: the libnetfilter_queue or system call, its arguments, and the errno.
///
/// The description is meant for an operator's log, e.g.
/// "nfq_create_queue(7) failed: Device or resource busy (errno 16) (is another program bound to queue 7?)".
public enum NetfilterQueueError: Error, CustomStringConvertible, Equatable, Sendable {
    /// `nfq_open()` could not open the netlink socket.
    case openFailed(errno: Int32)
    /// `nfq_bind_pf()` refused a protocol family (only on kernels older than 3.8, where binding still mattered).
    case bindProtocolFamilyFailed(family: UInt16, errno: Int32)
    /// `nfq_create_queue()` failed. `EPERM` means no CAP_NET_ADMIN *or* that another socket in this network namespace
    /// already owns the number (the kernel does not tell the two apart).
    case createQueueFailed(queue: UInt16, errno: Int32)
    /// `nfq_set_mode(NFQNL_COPY_PACKET)` failed.
    case setModeFailed(queue: UInt16, copyRange: UInt32, errno: Int32)
    /// `nfq_set_queue_maxlen()` failed.
    case setMaxLengthFailed(queue: UInt16, maxLength: UInt32, errno: Int32)
    /// `nfq_set_queue_flags()` failed (`EOPNOTSUPP` on kernels without the flag).
    case setFlagsFailed(queue: UInt16, flags: UInt32, errno: Int32)
    /// A socket option on the netlink socket (`SO_RCVBUF`, `O_NONBLOCK`) could not be set.
    case socketOptionFailed(option: String, errno: Int32)
    /// `recv()` on the netlink socket failed with something other than `EAGAIN`, `EINTR` or `ENOBUFS`.
    case receiveFailed(queue: UInt16, errno: Int32)
    /// `nfq_set_verdict()` could not send the verdict for one packet.
    case verdictFailed(queue: UInt16, id: UInt32, errno: Int32)
    /// `nfq_set_verdict_batch()` could not send the verdict for all packets up to `id`.
    case batchVerdictFailed(queue: UInt16, id: UInt32, errno: Int32)
    /// A modified payload longer than a netlink attribute can carry.
    case payloadTooLarge(queue: UInt16, id: UInt32, length: Int)
    /// The queue was used after ``NetfilterQueue/close()``.
    case closed(queue: UInt16)
    /// ``NetfilterQueue/receive(maxPackets:_:)`` was called from inside its own body.
    case receiveReentered(queue: UInt16)
    /// Reading the kernel's `/proc/net/netfilter/nfnetlink_queue` failed or did not list the queue.
    case statisticsUnavailable(queue: UInt16, errno: Int32)

    /// The errno carried by the error, if any.
    public var errno: Int32? {
        switch self {
        case .openFailed(let code), .bindProtocolFamilyFailed(_, let code), .createQueueFailed(_, let code),
            .setModeFailed(_, _, let code), .setMaxLengthFailed(_, _, let code), .setFlagsFailed(_, _, let code),
            .socketOptionFailed(_, let code), .receiveFailed(_, let code), .verdictFailed(_, _, let code),
            .batchVerdictFailed(_, _, let code), .statisticsUnavailable(_, let code):
            return code
        case .payloadTooLarge, .closed, .receiveReentered:
            return nil
        }
    }

    public var description: String {
        switch self {
        case .openFailed(let code):
            return "nfq_open() failed: \(errnoDescription(code))"
        case .bindProtocolFamilyFailed(let family, let code):
            return "nfq_bind_pf(\(family)) failed: \(errnoDescription(code))\(Self.permissionHint(code))"
        case .createQueueFailed(let queue, let code):
            // Linux answers EPERM both without CAP_NET_ADMIN and when another socket in the namespace owns the
            // number (nfnetlink_queue checks the owner's port id), so the hint names both.
            return "nfq_create_queue(\(queue)) failed: \(errnoDescription(code))"
                + " (are you root? is another program bound to queue \(queue)?)"
        case .setModeFailed(let queue, let copyRange, let code):
            return "nfq_set_mode(queue \(queue), NFQNL_COPY_PACKET, \(copyRange)) failed: \(errnoDescription(code))"
        case .setMaxLengthFailed(let queue, let maxLength, let code):
            return "nfq_set_queue_maxlen(queue \(queue), \(maxLength)) failed: \(errnoDescription(code))"
        case .setFlagsFailed(let queue, let flags, let code):
            let hex = String(flags, radix: 16)
            return "nfq_set_queue_flags(queue \(queue), 0x\(hex)) failed: \(errnoDescription(code))"
                + (code == EOPNOTSUPP ? " (the kernel does not support these queue flags)" : "")
        case .socketOptionFailed(let option, let code):
            return "setting \(option) on the nfnetlink socket failed: \(errnoDescription(code))"
        case .receiveFailed(let queue, let code):
            return "recv() on the nfnetlink socket of queue \(queue) failed: \(errnoDescription(code))"
        case .verdictFailed(let queue, let id, let code):
            return "nfq_set_verdict(queue \(queue), id \(id)) failed: \(errnoDescription(code))"
        case .batchVerdictFailed(let queue, let id, let code):
            return "nfq_set_verdict_batch(queue \(queue), up to id \(id)) failed: \(errnoDescription(code))"
        case .payloadTooLarge(let queue, let id, let length):
            return "nfq_set_verdict(queue \(queue), id \(id)) refused: modified payload of \(length) bytes is too large"
        case .closed(let queue):
            return "netfilter queue \(queue) is closed"
        case .receiveReentered(let queue):
            return "receive on netfilter queue \(queue) was called from inside its own packet body"
        case .statisticsUnavailable(let queue, let code):
            return "no kernel statistics for queue \(queue) in /proc/thread-self/net/netfilter/nfnetlink_queue: "
                + errnoDescription(code)
        }
    }

    private static func permissionHint(_ code: Int32) -> String {
        code == EPERM ? " (are you root?)" : ""
    }
}
