/// The length-prefixed record reassembly shared by the packet decoder and the notify decoder.
///
/// Records that arrive whole inside one input chunk are handed out in place, without a copy; only a record split
/// across chunks is copied into `buffer`, which grows to the largest record seen and never past the configured limit.
/// Every length is checked as soon as its 4 bytes are in, so a hostile length never makes the reader wait for, or
/// reserve, more than the limit.
struct ChardevStreamReader: Sendable {
    let channel: ChardevChannel
    /// 4, or 8 with the V field.
    let prefixLength: Int
    let maxLength: Int
    let maxVnetHeaderLength: Int
    /// Bytes the record must hold after its vnet header (14 for Ethernet, 1 for notify text).
    let minimumPayloadLength: Int

    /// The start of the record being reassembled (prefix included); grows, never shrinks.
    private(set) var buffer: [UInt8] = []
    /// Bytes of the current partial record held in `buffer`.
    private(set) var buffered = 0
    /// L of the partial record once its whole prefix is in; 0 before (L = 0 is never accepted).
    private var recordLength = 0
    private var vnetHeaderLength = 0
    /// Stream position of the first byte of the record being read.
    private(set) var streamOffset: UInt64 = 0
    private(set) var failure: ChardevError?

    init(
        channel: ChardevChannel, prefixLength: Int, maxLength: Int, maxVnetHeaderLength: Int,
        minimumPayloadLength: Int
    ) {
        self.channel = channel
        self.prefixLength = prefixLength
        self.maxLength = maxLength
        self.maxVnetHeaderLength = maxVnetHeaderLength
        self.minimumPayloadLength = minimumPayloadLength
    }

    /// Forgets any partial record and the poisoned state, keeping the grown buffer for the next connection.
    mutating func reset() {
        buffered = 0
        recordLength = 0
        vnetHeaderLength = 0
        streamOffset = 0
        failure = nil
    }

    /// Throws `.truncatedStream` when the stream ended inside a record; a poisoned reader has reported already.
    func finish() throws(ChardevError) {
        guard failure == nil, buffered > 0 else { return }
        let expected = recordLength == 0 ? nil : prefixLength + recordLength
        throw .truncatedStream(channel: channel, present: buffered, expected: expected, streamOffset: streamOffset)
    }

    /// Calls `deliver` with each complete record's L bytes (vnet header first) and its V, in stream order.
    mutating func feed(
        _ bytes: UnsafeRawBufferPointer,
        _ deliver: (_ record: UnsafeRawBufferPointer, _ vnetHeaderLength: Int, _ streamOffset: UInt64)
            throws(ChardevError) -> Void
    ) throws(ChardevError) {
        if let failure { throw .poisoned(after: failure) }
        do throws(ChardevError) {
            try consume(bytes, deliver)
        } catch {
            // The rest of the chunk was not consumed, so the stream position is lost for good.
            failure = error
            throw error
        }
    }

    private mutating func consume(
        _ bytes: UnsafeRawBufferPointer,
        _ deliver: (UnsafeRawBufferPointer, Int, UInt64) throws(ChardevError) -> Void
    ) throws(ChardevError) {
        guard let base = bytes.baseAddress else { return }
        let end = bytes.count
        var position = 0
        while position < end {
            let start = base + position
            let remaining = end - position
            if buffered == 0 {
                var knownTotal: Int?
                if remaining >= 4 {
                    let lengthField = start.loadUnaligned(as: UInt32.self)
                    let vnetField = remaining >= 8 ? start.loadUnaligned(fromByteOffset: 4, as: UInt32.self) : nil
                    if let prefix = try checkPrefix(lengthField: lengthField, vnetField: vnetField) {
                        let total = prefixLength + prefix.length
                        if remaining >= total {
                            let record = UnsafeRawBufferPointer(start: start + prefixLength, count: prefix.length)
                            try deliver(record, prefix.vnetHeaderLength, streamOffset)
                            position += total
                            streamOffset += UInt64(total)
                            continue
                        }
                        recordLength = prefix.length
                        vnetHeaderLength = prefix.vnetHeaderLength
                        knownTotal = total
                    }
                }
                reserve(knownTotal ?? prefixLength)
                store(start, count: remaining, at: 0)
                buffered = remaining
                position = end
                continue
            }

            if recordLength == 0 {
                let take = min(prefixLength - buffered, remaining)
                store(start, count: take, at: buffered)
                buffered += take
                position += take
                guard buffered >= 4 else { continue }
                let held = buffered
                let (lengthField, vnetField) = buffer.withUnsafeBytes { raw in
                    (
                        raw.loadUnaligned(as: UInt32.self),
                        held >= 8 ? raw.loadUnaligned(fromByteOffset: 4, as: UInt32.self) : nil
                    )
                }
                guard let prefix = try checkPrefix(lengthField: lengthField, vnetField: vnetField) else { continue }
                recordLength = prefix.length
                vnetHeaderLength = prefix.vnetHeaderLength
                reserve(prefixLength + recordLength)
                continue
            }

            let total = prefixLength + recordLength
            let take = min(total - buffered, remaining)
            store(start, count: take, at: buffered)
            buffered += take
            position += take
            guard buffered == total else { continue }
            let offset = streamOffset
            let vnetLength = vnetHeaderLength
            let payloadStart = prefixLength
            // Array.withUnsafeBytes only rethrows untyped errors, so the typed one is carried out as a value.
            let deliveryFailure: ChardevError? = buffer.withUnsafeBytes { raw in
                do throws(ChardevError) {
                    try deliver(UnsafeRawBufferPointer(rebasing: raw[payloadStart..<total]), vnetLength, offset)
                    return nil
                } catch {
                    return error
                }
            }
            buffered = 0
            recordLength = 0
            vnetHeaderLength = 0
            streamOffset += UInt64(total)
            if let deliveryFailure { throw deliveryFailure }
        }
    }

    /// Checks the prefix fields present so far (fields in wire order, not yet byte-swapped); returns L and V once
    /// the whole prefix is in.
    private func checkPrefix(
        lengthField: UInt32, vnetField: UInt32?
    ) throws(ChardevError) -> (length: Int, vnetHeaderLength: Int)? {
        let length = Int(UInt32(bigEndian: lengthField))
        if length == 0 { throw .zeroLength(channel: channel, streamOffset: streamOffset) }
        if length > maxLength {
            throw .lengthTooLarge(channel: channel, length: length, limit: maxLength, streamOffset: streamOffset)
        }
        var vnetLength = 0
        if prefixLength == 8 {
            guard let vnetField else { return nil }
            vnetLength = Int(UInt32(bigEndian: vnetField))
            if vnetLength > maxVnetHeaderLength {
                throw .vnetHeaderTooLong(length: vnetLength, limit: maxVnetHeaderLength, streamOffset: streamOffset)
            }
            if vnetLength > length {
                throw .vnetHeaderExceedsFrame(
                    vnetHeaderLength: vnetLength, frameLength: length, streamOffset: streamOffset)
            }
        }
        if length - vnetLength < minimumPayloadLength {
            throw .frameShorterThanEthernetHeader(
                frameLength: length, vnetHeaderLength: vnetLength, streamOffset: streamOffset)
        }
        return (length, vnetLength)
    }

    /// Grows the buffer to hold `count` bytes, doubling so that a stream of growing records reallocates rarely, but
    /// never past the largest record the limits allow.
    private mutating func reserve(_ count: Int) {
        guard buffer.count < count else { return }
        let ceiling = prefixLength + maxLength
        let target = max(count, min(buffer.count * 2, ceiling))
        buffer.append(contentsOf: repeatElement(0, count: target - buffer.count))
    }

    private mutating func store(_ source: UnsafeRawPointer, count: Int, at offset: Int) {
        guard count > 0 else { return }
        buffer.withUnsafeMutableBytes { raw in
            UnsafeMutableRawBufferPointer(rebasing: raw[offset..<(offset + count)])
                .copyMemory(from: UnsafeRawBufferPointer(start: source, count: count))
        }
    }
}
