/// One element of a spec as written: `key=value`, or a bare `key` (`value` nil).
struct SpecOption: Equatable, Sendable {
    var key: String
    var value: String?
}

/// QEMU's option syntax (`KIND,key=value,...`), split into options before any key means anything.
///
/// The rules are the ones QEMU users know: elements are separated by `,`; inside a value `,,` is a literal comma;
/// a first element without `=` is the value of the implied key (the kind); a later element without `=` is a bare
/// key, which the schema accepts only for booleans (`key` = `key=on`); one trailing `,` is ignored, as QEMU does.
/// Splitting works on UTF-8 bytes: `,` and `=` never occur inside a multi-byte character, so values keep any text.
enum SpecSyntax {
    private static let comma = UInt8(ascii: ",")
    private static let equals = UInt8(ascii: "=")

    static func split(_ text: String, impliedKey: String) -> [SpecOption] {
        let bytes = Array(text.utf8)
        var options: [SpecOption] = []
        var index = 0
        while index < bytes.count {
            var keyEnd = index
            while keyEnd < bytes.count, bytes[keyEnd] != comma, bytes[keyEnd] != equals {
                keyEnd += 1
            }
            if keyEnd < bytes.count, bytes[keyEnd] == equals {
                let (value, next) = scanValue(bytes, from: keyEnd + 1)
                options.append(SpecOption(key: string(bytes[index..<keyEnd]), value: value))
                index = next
            } else if options.isEmpty {
                // The implied key's value is a value like any other, so `,,` escapes a comma in it too.
                let (value, next) = scanValue(bytes, from: index)
                options.append(SpecOption(key: impliedKey, value: value))
                index = next
            } else {
                options.append(SpecOption(key: string(bytes[index..<keyEnd]), value: nil))
                index = keyEnd + 1
            }
        }
        return options
    }

    /// Reads a value up to the next single comma; returns it and the index after that comma.
    private static func scanValue(_ bytes: [UInt8], from start: Int) -> (String, Int) {
        var value: [UInt8] = []
        var index = start
        while index < bytes.count {
            if bytes[index] == comma {
                guard index + 1 < bytes.count, bytes[index + 1] == comma else {
                    return (string(value[...]), index + 1)
                }
                value.append(comma)
                index += 2
            } else {
                value.append(bytes[index])
                index += 1
            }
        }
        return (string(value[...]), index)
    }

    private static func string(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes, as: UTF8.self)
    }

    /// The canonical text: the kind first, then `key=value` with every comma in a value doubled.
    static func render(kind: String, options: [(key: String, value: String)]) -> String {
        var text = escape(kind)
        for option in options {
            text += "," + option.key + "=" + escape(option.value)
        }
        return text
    }

    static func escape(_ value: String) -> String {
        value.contains(",") ? value.replacing(",", with: ",,") : value
    }
}

/// Near-miss suggestions for "did you mean" in error messages.
enum SpellingSuggestion {
    /// The candidate closest to `word` by edit distance (a swap of two letters counts as two), when it is close
    /// enough to be a typo: at most 1 edit for words up to 4 letters, 2 for longer ones.
    static func nearest(_ word: String, in candidates: [String]) -> String? {
        let limit = word.utf8.count <= 4 ? 1 : 2
        var best: (candidate: String, distance: Int)?
        for candidate in candidates {
            let distance = editDistance(Array(word.lowercased().utf8), Array(candidate.utf8))
            if distance <= limit, distance < best?.distance ?? Int.max {
                best = (candidate, distance)
            }
        }
        return best?.candidate
    }

    private static func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
