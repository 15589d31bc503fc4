/// Edits sequence-space fields of a TCP segment in place, keeping its checksum right incrementally.
///
/// The one place where seq/ack/SACK edges are changed, so the rewriter, the tests and the benchmarks all exercise
/// the same code. Every function expects a layout for which `layout.isTCP && layout.transportHeaderComplete`.
public enum TCPFieldEditor {
    /// Adds `delta` (mod 2^32) to the sequence number.
    @inlinable
    public static func addToSequenceNumber(
        _ delta: UInt32, in bytes: UnsafeMutableRawBufferPointer, layout: PacketLayout
    ) {
        addToSequenceNumber(delta, in: bytes, transportOffset: layout.transportOffset)
    }

    /// The same, given only where the TCP header starts: per-packet callers holding the layout in place (packet
    /// metadata) pass one field instead of a copy of the whole layout.
    @inlinable @inline(__always)
    public static func addToSequenceNumber(
        _ delta: UInt32, in bytes: UnsafeMutableRawBufferPointer, transportOffset t: Int
    ) {
        let old = bytes.be32(t + 4)
        let new = old &+ delta
        bytes.setBE32(new, at: t + 4)
        bytes.setBE16(Checksum.update(bytes.be16(t + 16), old: old, new: new), at: t + 16)
    }

    /// Adds `delta` (mod 2^32) to the acknowledgment number.
    @inlinable
    public static func addToAcknowledgmentNumber(
        _ delta: UInt32, in bytes: UnsafeMutableRawBufferPointer, layout: PacketLayout
    ) {
        let t = layout.transportOffset
        let old = bytes.be32(t + 8)
        let new = old &+ delta
        bytes.setBE32(new, at: t + 8)
        bytes.setBE16(Checksum.update(bytes.be16(t + 16), old: old, new: new), at: t + 16)
    }

    /// Adds `sequenceDelta` to seq and `ackDelta` to ack with a single checksum update.
    @inlinable
    public static func addToSequenceAndAcknowledgment(
        sequenceDelta: UInt32, ackDelta: UInt32, in bytes: UnsafeMutableRawBufferPointer, layout: PacketLayout
    ) {
        let t = layout.transportOffset
        let oldSeq = bytes.be32(t + 4)
        let oldAck = bytes.be32(t + 8)
        let newSeq = oldSeq &+ sequenceDelta
        let newAck = oldAck &+ ackDelta
        bytes.setBE32(newSeq, at: t + 4)
        bytes.setBE32(newAck, at: t + 8)
        var checksum = bytes.be16(t + 16)
        checksum = Checksum.update(checksum, old: oldSeq, new: newSeq)
        checksum = Checksum.update(checksum, old: oldAck, new: newAck)
        bytes.setBE16(checksum, at: t + 16)
    }

    /// Adds `delta` to both edges of every SACK block. Returns the number of blocks changed.
    @discardableResult
    public static func addToSACKEdges(_ delta: UInt32, in bytes: UnsafeMutableRawBufferPointer, layout: PacketLayout)
        -> Int
    {
        let t = layout.transportOffset
        let header = UnsafeMutableRawBufferPointer(rebasing: bytes[t..<(t + layout.transportHeaderLength)])
        var i = 20
        var changed = 0
        var checksum = bytes.be16(t + 16)
        while i < header.count {
            let kind = header[i]
            if kind == 0 { break }
            if kind == 1 {
                i += 1
                continue
            }
            guard i + 1 < header.count else { break }
            let length = Int(header[i + 1])
            guard length >= 2, i + length <= header.count else { break }
            if kind == 5 && length >= 10 {
                var edge = i + 2
                while edge + 4 <= i + length {
                    let old = header.be32(edge)
                    let new = old &+ delta
                    header.setBE32(new, at: edge)
                    checksum = Checksum.update(checksum, old: old, new: new)
                    edge += 4
                }
                changed += (length - 2) / 8
            }
            i += length
        }
        bytes.setBE16(checksum, at: t + 16)
        return changed
    }

    /// Offset of the timestamp option's TSval within the frame, or nil when the segment has none.
    public static func timestampOffset(in bytes: UnsafeRawBufferPointer, layout: PacketLayout) -> Int? {
        let t = layout.transportOffset
        var i = t + 20
        let end = t + layout.transportHeaderLength
        while i < end {
            let kind = bytes[i]
            if kind == 0 { return nil }
            if kind == 1 {
                i += 1
                continue
            }
            guard i + 1 < end else { return nil }
            let length = Int(bytes[i + 1])
            guard length >= 2, i + length <= end else { return nil }
            if kind == 8 && length == 10 { return i + 2 }
            i += length
        }
        return nil
    }

    /// Adds `valueDelta` to TSval and `echoDelta` to TSecr of the timestamp option, if any. Returns whether the
    /// segment had one.
    @discardableResult
    public static func addToTimestamps(
        valueDelta: UInt32, echoDelta: UInt32, in bytes: UnsafeMutableRawBufferPointer, layout: PacketLayout
    ) -> Bool {
        guard let offset = timestampOffset(in: UnsafeRawBufferPointer(bytes), layout: layout) else { return false }
        let t = layout.transportOffset
        var checksum = bytes.be16(t + 16)
        for (field, delta) in [(offset, valueDelta), (offset + 4, echoDelta)] where delta != 0 {
            let old = bytes.be32(field)
            let new = old &+ delta
            bytes.setBE32(new, at: field)
            checksum = Checksum.update(checksum, old: old, new: new)
        }
        bytes.setBE16(checksum, at: t + 16)
        return true
    }
}
