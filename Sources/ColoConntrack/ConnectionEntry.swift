/// TCP connection states, as Linux names them (SYN_SENT2 is the simultaneous-open state).
public enum TCPState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case none, synSent, synReceived, established, finWait, closeWait, lastAck, timeWait, close, synSent2

    /// The name `conntrack -L` prints.
    public var description: String {
        switch self {
        case .none: "NONE"
        case .synSent: "SYN_SENT"
        case .synReceived: "SYN_RECV"
        case .established: "ESTABLISHED"
        case .finWait: "FIN_WAIT"
        case .closeWait: "CLOSE_WAIT"
        case .lastAck: "LAST_ACK"
        case .timeWait: "TIME_WAIT"
        case .close: "CLOSE"
        case .synSent2: "SYN_SENT2"
        }
    }
}

/// Window-tracking state of one direction's sender (CONNTRACK.md "Window tracking").
public struct TCPDirectionState: Sendable, Equatable {
    /// Highest seq + len sent.
    public var end: UInt32 = 0
    /// Highest ack + window seen from the peer: the most this sender may send up to.
    public var maxEnd: UInt32 = 0
    /// Largest (scaled) window this sender advertised.
    public var maxWindow: UInt32 = 0
    /// Highest ack this sender sent.
    public var maxAck: UInt32 = 0
    public var windowScale: UInt8 = 0
    public var flags: TCPDirectionFlags = []

    public init() {}
}

/// Per-direction TCP facts learned from options and acks.
public struct TCPDirectionFlags: OptionSet, Sendable, Equatable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    @inlinable public static var windowScaleSeen: TCPDirectionFlags { TCPDirectionFlags(rawValue: 0x01) }
    @inlinable public static var sackPermitted: TCPDirectionFlags { TCPDirectionFlags(rawValue: 0x02) }
    @inlinable public static var maxAckSet: TCPDirectionFlags { TCPDirectionFlags(rawValue: 0x04) }
    @inlinable public static var dataUnacknowledged: TCPDirectionFlags { TCPDirectionFlags(rawValue: 0x08) }
    /// Window checks are skipped for this direction (mid-stream pickup, where the scale is unknown).
    @inlinable public static var liberal: TCPDirectionFlags { TCPDirectionFlags(rawValue: 0x10) }
    @inlinable public static var closeInitiated: TCPDirectionFlags { TCPDirectionFlags(rawValue: 0x20) }
}

/// Facts about a connection as a whole.
public struct ConnectionStatus: OptionSet, Sendable, Equatable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    @inlinable public static var inUse: ConnectionStatus { ConnectionStatus(rawValue: 0x01) }
    @inlinable public static var seenReply: ConnectionStatus { ConnectionStatus(rawValue: 0x02) }
    @inlinable public static var assured: ConnectionStatus { ConnectionStatus(rawValue: 0x04) }
}

/// Four 64-bit words on every connection that later stages own: the rewriter keeps its sequence offset in one,
/// the comparer its queue index in another. A stage claims a word once (`ConnectionTracker.claimExtension`)
/// and the tracker resets all of them when the entry is created, so no stage needs a table of its own.
public struct ConnectionExtensions: Sendable, Equatable {
    public static let count = 4
    @usableFromInline var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    public init() {}

    @inlinable public subscript(slot: ExtensionSlot) -> UInt64 {
        get {
            switch slot.index {
            case 0: words.0
            case 1: words.1
            case 2: words.2
            default: words.3
            }
        }
        set {
            switch slot.index {
            case 0: words.0 = newValue
            case 1: words.1 = newValue
            case 2: words.2 = newValue
            default: words.3 = newValue
            }
        }
    }

    public static func == (a: ConnectionExtensions, b: ConnectionExtensions) -> Bool {
        a.words == b.words
    }
}

/// A word of `ConnectionExtensions` claimed by one stage. A plain index (no name stored here: copying a String
/// would cost a reference count per packet); `ConnectionTracker.extensionNames` says who claimed which.
public struct ExtensionSlot: Sendable, Hashable {
    public let index: Int
    /// Stages get slots from `ConnectionTracker.claimExtension`; this is for placeholders only.
    public init(index: Int) { self.index = min(max(index, 0), ConnectionExtensions.count - 1) }
}

/// One tracked connection. Lives in the table's storage; reached through a `ConnectionHandle`.
///
/// It holds only plain values (no references), so the table is one contiguous allocation and an entry can be
/// copied out whole for listing, events or state sync to a standby proxy.
public struct ConnectionEntry: Sendable {
    /// The original direction's key; the reply key is `key.reversed()`.
    public var key: FlowKey
    public var generation: UInt32 = 0
    @usableFromInline var nextFree: UInt32 = .max
    /// When the entry expires, in the tracker's clock (nanoseconds).
    public var expiresAt: UInt64 = 0
    public var createdAt: UInt64 = 0
    public var status: ConnectionStatus = []
    /// TCP state (`TCPState.rawValue`); UDP and others use `.none`.
    public var tcpState: TCPState = .none
    public var original = TCPDirectionState()
    public var reply = TCPDirectionState()
    public var packets: (original: UInt64, reply: UInt64) = (0, 0)
    public var bytes: (original: UInt64, reply: UInt64) = (0, 0)
    public var extensions = ConnectionExtensions()

    public init(key: FlowKey) { self.key = key }

    @inlinable public var isInUse: Bool { status.contains(.inUse) }
}
