import ColoPacket

/// What a TCP segment is, for the state machine.
enum TCPSegmentClass: Int {
    case syn = 0, synAck, fin, ack, rst, none
}

/// The outcome of the state machine for one segment.
enum TCPTransition: Equatable {
    case to(TCPState)
    /// Accepted without changing state or windows (a SYN on an established connection, a late SYN|ACK...).
    case ignore
    case invalid
}

/// TCP tracking in the manner of Linux's nf_conntrack: a per-direction state machine plus window tracking.
/// Kept free of table details: it reads and updates one `ConnectionEntry`.
enum TCPTracker {
    @inline(__always)
    static func classify(_ flags: TCPFlags) -> TCPSegmentClass {
        if flags.contains(.rst) { return .rst }
        if flags.contains(.syn) { return flags.contains(.ack) ? .synAck : .syn }
        if flags.contains(.fin) { return .fin }
        if flags.contains(.ack) { return .ack }
        return .none
    }

    /// CONNTRACK.md: SYN with RST or FIN; neither SYN, ACK nor RST; FIN/PSH/URG without ACK.
    @inline(__always)
    static func flagsAreValid(_ flags: TCPFlags) -> Bool {
        if flags.contains(.syn) && (flags.contains(.rst) || flags.contains(.fin)) { return false }
        if !flags.contains(.syn) && !flags.contains(.ack) && !flags.contains(.rst) { return false }
        if !flags.contains(.ack) && (flags.contains(.fin) || flags.contains(.psh) || flags.contains(.urg)) {
            // A SYN may carry URG/PSH in the wild; only FIN without ACK, or PSH/URG on a non-SYN, is refused.
            if flags.contains(.fin) || !flags.contains(.syn) { return false }
        }
        return true
    }

    /// Next state for a segment of `kind` travelling in `direction` on a connection in `state`.
    @inline(__always)
    static func transition(from state: TCPState, _ kind: TCPSegmentClass, _ direction: FlowDirection)
        -> TCPTransition
    {
        switch (kind, direction) {
        case (.none, _):
            return .invalid
        case (.rst, _):
            return state == .none ? .invalid : .to(.close)
        case (.fin, _):
            switch state {
            case .synReceived, .established: return .to(.finWait)
            case .finWait, .closeWait, .lastAck: return .to(.lastAck)
            case .timeWait: return .to(.timeWait)
            case .close: return .to(.close)
            case .none, .synSent, .synSent2: return .invalid
            }
        case (.syn, .original):
            switch state {
            case .none, .synSent, .timeWait, .close: return .to(.synSent)
            case .synSent2: return .to(.synSent2)
            default: return .ignore
            }
        case (.syn, .reply):
            switch state {
            case .synSent, .synSent2: return .to(.synSent2)  // simultaneous open
            case .timeWait: return .to(.synSent)
            default: return .invalid
            }
        case (.synAck, .original):
            switch state {
            case .synSent2: return .to(.synReceived)
            case .none, .synSent: return .invalid
            default: return .ignore
            }
        case (.synAck, .reply):
            switch state {
            case .synSent, .synReceived, .synSent2: return .to(.synReceived)
            case .none: return .invalid
            default: return .ignore
            }
        case (.ack, .original):
            switch state {
            case .none: return .to(.established)  // mid-stream pickup; refused by the caller when switched off
            case .synReceived, .established: return .to(.established)
            case .finWait, .closeWait: return .to(.closeWait)
            case .lastAck, .timeWait: return .to(.timeWait)
            case .close: return .to(.close)
            case .synSent, .synSent2: return .invalid
            }
        case (.ack, .reply):
            switch state {
            case .synReceived: return .to(.synReceived)
            case .established: return .to(.established)
            case .finWait, .closeWait: return .to(.closeWait)
            case .lastAck, .timeWait: return .to(.timeWait)
            case .close: return .to(.close)
            case .synSent, .synSent2: return .ignore
            case .none: return .invalid
            }
        }
    }

    /// Sets up the original direction from a connection's first segment.
    static func start(_ entry: inout ConnectionEntry, tcp: TCPHeader, kind: TCPSegmentClass, liberal: Bool) {
        let end = tcp.sequenceNumber &+ tcp.sequenceLength
        var sender = TCPDirectionState()
        sender.end = end
        if kind == .syn {
            sender.maxEnd = end
            sender.maxWindow = max(1, UInt32(tcp.window))
            readOptions(tcp, into: &sender)
            entry.tcpState = .synSent
        } else {
            // Mid-stream: the window scale is unknown, so this connection's windows cannot be checked.
            sender.maxWindow = max(1, UInt32(tcp.window))
            sender.maxEnd = end &+ sender.maxWindow
            sender.flags.insert([.liberal, .sackPermitted])
            entry.reply.flags.insert([.liberal, .sackPermitted])
            if tcp.flags.contains(.ack) {
                entry.reply.end = tcp.acknowledgmentNumber
                entry.reply.maxEnd = tcp.acknowledgmentNumber
            }
            entry.tcpState = .established
        }
        if liberal { sender.flags.insert(.liberal) }
        entry.original = sender
    }

    static func readOptions(_ tcp: TCPHeader, into state: inout TCPDirectionState) {
        for option in tcp.options {
            switch option {
            case .windowScale(let shift):
                state.windowScale = min(shift, 14)
                state.flags.insert(.windowScaleSeen)
            case .sackPermitted:
                state.flags.insert(.sackPermitted)
            default:
                break
            }
        }
    }

    /// Result of the window check.
    enum WindowVerdict {
        case accept
        /// Out of window in a harmless way (an old retransmission, a late ack): accepted, state not updated.
        case ignore
        case invalid
    }

    /// Window tracking for one segment, updating both directions' state when it is in window.
    /// The two directions are worked on in place, through pointers into the entry: copied out and written back
    /// whole they were most of this function's work on every packet.
    static func checkWindow(
        _ entry: UnsafeMutablePointer<ConnectionEntry>, tcp: TCPHeader, kind: TCPSegmentClass,
        direction: FlowDirection
    ) -> WindowVerdict {
        // Key-path projections of stored properties fold to constant offsets (a static let of the offsets cost a
        // swift_once check on every call). Both are stored properties, so neither is ever nil.
        guard let originalState = entry.pointer(to: \.original), let replyState = entry.pointer(to: \.reply) else {
            preconditionFailure("ConnectionEntry's directions are stored properties")
        }
        let s = direction == .original ? originalState : replyState
        let r = direction == .original ? replyState : originalState
        let seq = tcp.sequenceNumber
        var ack = tcp.acknowledgmentNumber
        let end = seq &+ tcp.sequenceLength
        var window = UInt32(tcp.window)
        let flags = tcp.flags

        if s.pointee.maxWindow == 0 {
            // First segment from this side: learn its sequence space.
            if kind == .synAck || kind == .syn {
                s.pointee.end = end
                s.pointee.maxEnd = end
                s.pointee.maxWindow = max(1, window)
                readOptions(tcp, into: &s.pointee)
                // Window scaling is on only when both SYNs carried the option.
                if !(s.pointee.flags.contains(.windowScaleSeen) && r.pointee.flags.contains(.windowScaleSeen)) {
                    s.pointee.windowScale = 0
                    r.pointee.windowScale = 0
                }
            } else {
                s.pointee.end = end
                s.pointee.maxWindow = max(1, window << UInt32(s.pointee.windowScale))
                s.pointee.maxEnd = end &+ s.pointee.maxWindow
                if r.pointee.maxWindow == 0 {
                    r.pointee.end = ack
                    r.pointee.maxEnd = ack
                }
            }
        } else if kind == .syn && direction == .original && entry.pointee.tcpState == .synSent
            && after(end, s.pointee.end)
        {
            // A retransmitted SYN with a new ISN (the peer's stack restarted): start this side over.
            s.pointee = TCPDirectionState()
            s.pointee.end = end
            s.pointee.maxEnd = end
            s.pointee.maxWindow = max(1, window)
            readOptions(tcp, into: &s.pointee)
        }

        if !flags.contains(.ack) {
            ack = r.pointee.end
        } else if flags.contains(.rst) && ack == 0 {
            ack = r.pointee.end  // some stacks send RST|ACK with a zero ack
        }
        var highestAck = ack
        // SACK edges count as acknowledged only when the option is allowed and present (options beyond 20 bytes).
        if flags.contains(.ack), tcp.headerLength > 20,
            r.pointee.flags.contains(.sackPermitted) || s.pointee.flags.contains(.sackPermitted),
            let blocks = tcp.sackBlocks
        {
            for block in blocks where after(block.right, highestAck) { highestAck = block.right }
        }
        if kind != .syn && kind != .synAck { window <<= UInt32(s.pointee.windowScale) }

        if s.pointee.flags.contains(.liberal) || r.pointee.flags.contains(.liberal) {
            update(
                &s.pointee, &r.pointee, end: end, ack: ack, highestAck: highestAck, window: window,
                hasAck: flags.contains(.ack))
            return .accept
        }

        let seqNotBeyondUpper = !after(seq, s.pointee.maxEnd)
        let ackNotBeyondUpper = !after(highestAck, r.pointee.end)
        let lowerSeqBound = s.pointee.end &- r.pointee.maxWindow
        let seqNotBelowLower = !before(end, lowerSeqBound)
        let ackWindow = max(r.pointee.maxWindow, 66000)
        let ackNotBelowLower = !before(highestAck, r.pointee.end &- ackWindow)

        guard seqNotBeyondUpper, ackNotBeyondUpper else { return .invalid }
        guard seqNotBelowLower, ackNotBelowLower else { return .ignore }
        update(
            &s.pointee, &r.pointee, end: end, ack: ack, highestAck: highestAck, window: window,
            hasAck: flags.contains(.ack)
        )
        return .accept
    }

    private static func update(
        _ sender: inout TCPDirectionState, _ receiver: inout TCPDirectionState, end: UInt32, ack: UInt32,
        highestAck: UInt32, window: UInt32, hasAck: Bool
    ) {
        if sender.maxWindow < window { sender.maxWindow = window }
        if after(end, sender.end) {
            sender.end = end
            sender.flags.insert(.dataUnacknowledged)
        }
        if hasAck {
            if !sender.flags.contains(.maxAckSet) {
                sender.maxAck = ack
                sender.flags.insert(.maxAckSet)
            } else if after(ack, sender.maxAck) {
                sender.maxAck = ack
            }
        }
        if receiver.maxWindow != 0 && after(end, sender.maxEnd) {
            receiver.maxWindow &+= end &- sender.maxEnd
        }
        if after(highestAck &+ window, receiver.maxEnd &- 1) {
            receiver.maxEnd = highestAck &+ window
            if window == 0 { receiver.maxEnd &+= 1 }
        }
        if ack == receiver.end { receiver.flags.remove(.dataUnacknowledged) }
    }

    /// Sequence comparison modulo 2^32 (RFC 1982 style).
    @inline(__always) static func after(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: b &- a) < 0 }
    @inline(__always) static func before(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) < 0 }
}
