/// Writes frames in QEMU's chardev framing (WIRE.md §1): L, V when `vnetHeaderSupport` is on, the vnet header, the
/// Ethernet frame.
///
/// The vnet header is written exactly as given, and V is its length, possibly 0. That is what QEMU's filter-mirror
/// does: it sends its netdev's vnet header length, which is 0 (and no header bytes) for netdevs without one; and
/// colo-compare forwards the V it received. Padding a frame with a zeroed 10- or 12-byte header instead would make
/// L disagree with what the source sent. A frame that has a vnet header cannot go to a connection without the V
/// field: the receiver would read the header as Ethernet, so that is an error, not a silent strip.
public struct ChardevFrameEncoder: Sendable {
    public let framing: ChardevFraming

    public init(framing: ChardevFraming = ChardevFraming()) {
        self.framing = framing
    }

    /// The bytes one frame takes on the wire, prefix included.
    @inlinable @inline(__always)
    public func encodedLength(vnetHeaderLength: Int, ethernetLength: Int) -> Int {
        framing.prefixLength + vnetHeaderLength + ethernetLength
    }

    /// Writes one frame at the start of `output` and returns the bytes written. Inlinable: a socket port calls it
    /// for every frame it sends, and the checks fold into a few compares there.
    @inlinable @inline(__always)
    public func encode(
        vnetHeader: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
        ethernet: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) throws(ChardevError) -> Int {
        try check(vnetHeaderLength: vnetHeader.count, ethernetLength: ethernet.count)
        let total = encodedLength(vnetHeaderLength: vnetHeader.count, ethernetLength: ethernet.count)
        guard output.count >= total else { throw .outputTooSmall(needed: total, available: output.count) }
        write(
            vnetHeader: vnetHeader, ethernet: ethernet, into: UnsafeMutableRawBufferPointer(rebasing: output[0..<total])
        )
        return total
    }

    /// Appends one frame to `output`; reusing the array (`removeAll(keepingCapacity: true)`) avoids allocation once it
    /// has grown.
    public func append(
        vnetHeader: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
        ethernet: UnsafeRawBufferPointer,
        to output: inout [UInt8]
    ) throws(ChardevError) {
        try check(vnetHeaderLength: vnetHeader.count, ethernetLength: ethernet.count)
        let start = output.count
        let total = encodedLength(vnetHeaderLength: vnetHeader.count, ethernetLength: ethernet.count)
        output.append(contentsOf: repeatElement(0, count: total))
        output.withUnsafeMutableBytes { raw in
            write(
                vnetHeader: vnetHeader, ethernet: ethernet, into: UnsafeMutableRawBufferPointer(rebasing: raw[start...])
            )
        }
    }

    /// Appends a decoded frame unchanged, vnet header included (colo-compare's forwarding).
    public func append(_ frame: ChardevFrame, to output: inout [UInt8]) throws(ChardevError) {
        try append(vnetHeader: frame.vnetHeader, ethernet: frame.ethernet, to: &output)
    }

    @inlinable @inline(__always)
    func check(vnetHeaderLength: Int, ethernetLength: Int) throws(ChardevError) {
        let length = vnetHeaderLength + ethernetLength
        if vnetHeaderLength > 0 && !framing.vnetHeaderSupport {
            throw .vnetHeaderWithoutSupport(length: vnetHeaderLength)
        }
        if vnetHeaderLength > framing.maxVnetHeaderLength {
            throw .vnetHeaderTooLong(length: vnetHeaderLength, limit: framing.maxVnetHeaderLength, streamOffset: nil)
        }
        if ethernetLength < ChardevFraming.ethernetHeaderLength {
            throw .frameShorterThanEthernetHeader(
                frameLength: length, vnetHeaderLength: vnetHeaderLength, streamOffset: nil)
        }
        // L is a u32 whatever the configured limit says.
        let limit = min(framing.maxFrameLength, Int(UInt32.max))
        if length > limit {
            throw .lengthTooLarge(channel: .packets, length: length, limit: limit, streamOffset: nil)
        }
    }

    /// `output` is exactly the encoded length; the frame has been checked.
    @inlinable @inline(__always)
    func write(
        vnetHeader: UnsafeRawBufferPointer, ethernet: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer
    ) {
        output.storeBytes(of: UInt32(vnetHeader.count + ethernet.count).bigEndian, toByteOffset: 0, as: UInt32.self)
        var cursor = 4
        if framing.vnetHeaderSupport {
            output.storeBytes(of: UInt32(vnetHeader.count).bigEndian, toByteOffset: 4, as: UInt32.self)
            cursor = 8
        }
        if !vnetHeader.isEmpty {
            // Nearly always empty: a copy of nothing was still a call per frame.
            UnsafeMutableRawBufferPointer(rebasing: output[cursor..<(cursor + vnetHeader.count)]).copyMemory(
                from: vnetHeader)
            cursor += vnetHeader.count
        }
        UnsafeMutableRawBufferPointer(rebasing: output[cursor...]).copyMemory(from: ethernet)
    }
}
