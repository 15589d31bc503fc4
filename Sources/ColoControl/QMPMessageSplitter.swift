/// Cuts a QMP input stream into top-level JSON texts without parsing them, so that messages may arrive split across
/// reads or several per read, with or without newlines between them.
///
/// A message starting with `{` or `[` ends when its brackets balance (brackets inside strings, and escaped quotes,
/// do not count). Anything else at top level (a stray word, a bare number or string) runs to the next whitespace or
/// opening bracket and is handed over as it is, for the parser to reject. A message longer than `limit` bytes is
/// reported once as ``Piece/oversized(limit:)`` and the rest of it is skipped without being stored, so the memory a
/// client can make the server hold is bounded by `limit`. A 0xFF byte (never valid in UTF-8) throws away any
/// partial message: a client that lost track can send it to resynchronise.
struct QMPMessageSplitter {
    enum Piece: Equatable {
        /// The bytes of one top-level JSON text (not yet validated).
        case message([UInt8])
        /// A message exceeded the limit; its bytes are being discarded up to its end.
        case oversized(limit: Int)
    }

    private enum Mode {
        /// Between messages.
        case idle
        /// Inside an object or array, `depth` brackets deep.
        case structured
        /// Inside a top-level token that is not an object or array.
        case scalar
    }

    let limit: Int
    private var buffer: [UInt8] = []
    private var mode = Mode.idle
    private var depth = 0
    private var inString = false
    private var escaped = false
    private var discarding = false

    init(limit: Int) {
        self.limit = limit
    }

    /// Bytes of an incomplete message currently held (never more than `limit`).
    var bufferedByteCount: Int { buffer.count }

    /// Consumes `bytes`, calling `emit` for each completed piece in order.
    mutating func feed(_ bytes: some Sequence<UInt8>, emit: (Piece) -> Void) {
        for byte in bytes {
            if byte == 0xFF {
                reset()
                continue
            }
            switch mode {
            case .idle:
                if isWhitespace(byte) { continue }
                if byte == UInt8(ascii: "{") || byte == UInt8(ascii: "[") {
                    mode = .structured
                    depth = 1
                } else {
                    mode = .scalar
                    inString = byte == UInt8(ascii: "\"")
                }
                store(byte, emit: emit)
            case .structured:
                store(byte, emit: emit)
                if advanceString(byte) { continue }
                if byte == UInt8(ascii: "{") || byte == UInt8(ascii: "[") {
                    depth += 1
                } else if byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]") {
                    depth -= 1
                    if depth == 0 { finish(emit: emit) }
                }
            case .scalar:
                if !inString && (isWhitespace(byte) || byte == UInt8(ascii: "{") || byte == UInt8(ascii: "[")) {
                    finish(emit: emit)
                    if !isWhitespace(byte) {
                        mode = .structured
                        depth = 1
                        store(byte, emit: emit)
                    }
                    continue
                }
                store(byte, emit: emit)
                if inString {
                    _ = advanceString(byte)
                } else if byte == UInt8(ascii: "\"") {
                    inString = true
                }
            }
        }
    }

    /// Tracks string state for a byte already known to be inside a message. Returns true when the byte was part of
    /// a string (including its closing quote) and so must not be read as structure.
    private mutating func advanceString(_ byte: UInt8) -> Bool {
        if inString {
            if escaped {
                escaped = false
            } else if byte == UInt8(ascii: "\\") {
                escaped = true
            } else if byte == UInt8(ascii: "\"") {
                inString = false
            }
            return true
        }
        if byte == UInt8(ascii: "\"") {
            inString = true
            return true
        }
        return false
    }

    private mutating func store(_ byte: UInt8, emit: (Piece) -> Void) {
        if discarding { return }
        if buffer.count >= limit {
            discarding = true
            buffer = []
            emit(.oversized(limit: limit))
            return
        }
        buffer.append(byte)
    }

    private mutating func finish(emit: (Piece) -> Void) {
        if !discarding { emit(.message(buffer)) }
        buffer.removeAll(keepingCapacity: buffer.capacity <= 4096)
        discarding = false
        mode = .idle
        depth = 0
        inString = false
        escaped = false
    }

    private mutating func reset() {
        buffer.removeAll(keepingCapacity: buffer.capacity <= 4096)
        discarding = false
        mode = .idle
        depth = 0
        inString = false
        escaped = false
    }

    private func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09
    }
}
