/// The request line of an HTTP/1.x request head; headers are not needed to serve `/metrics`, but they are checked
/// for shape.
struct HTTPRequestHead: Equatable {
    var method: String
    /// The target without a query string.
    var path: String
    var version: String

    struct Malformed: Error, Equatable {
        var reason: String
    }

    /// The index just past the blank line that ends the head (`\r\n\r\n`, or `\n\n` from lax clients).
    static func endOfHead(in bytes: [UInt8]) -> Int? {
        var index = 0
        while index < bytes.count {
            if bytes[index] == 0x0A {
                if index + 1 < bytes.count, bytes[index + 1] == 0x0A { return index + 2 }
                if index + 2 < bytes.count, bytes[index + 1] == 0x0D, bytes[index + 2] == 0x0A { return index + 3 }
            }
            index += 1
        }
        return nil
    }

    static func parse(_ bytes: [UInt8]) -> Result<HTTPRequestHead, Malformed> {
        guard let end = endOfHead(in: bytes) else { return .failure(Malformed(reason: "incomplete head")) }
        // Only visible ASCII, spaces, tabs and line ends belong in a request head.
        for byte in bytes[0..<end] where !(byte == 0x09 || byte == 0x0A || byte == 0x0D || (0x20...0x7E).contains(byte))
        {
            return .failure(Malformed(reason: "byte \(byte) in head"))
        }
        // Split on LF as bytes (a Swift String would treat CR LF as one character).
        var lines = bytes[0..<end].split(separator: 0x0A, omittingEmptySubsequences: false).map { line in
            String(decoding: line.last == 0x0D ? line.dropLast() : line, as: UTF8.self)
        }
        while lines.last?.isEmpty == true { lines.removeLast() }
        guard let requestLine = lines.first else { return .failure(Malformed(reason: "empty request")) }
        let parts = requestLine.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy({ $0.isUppercase && $0.isASCII }),
            parts[1].hasPrefix("/"), parts[2] == "HTTP/1.1" || parts[2] == "HTTP/1.0"
        else { return .failure(Malformed(reason: "bad request line")) }
        for header in lines.dropFirst() {
            guard let colon = header.firstIndex(of: ":"), colon != header.startIndex,
                !header[..<colon].contains(" ")
            else { return .failure(Malformed(reason: "bad header line")) }
        }
        let target = parts[1]
        let path = target.firstIndex(of: "?").map { target[..<$0] } ?? target
        return .success(HTTPRequestHead(method: String(parts[0]), path: String(path), version: String(parts[2])))
    }
}

enum HTTPStatus: Equatable {
    case ok, badRequest, notFound, methodNotAllowed, headerTooLarge

    var code: Int {
        switch self {
        case .ok: 200
        case .badRequest: 400
        case .notFound: 404
        case .methodNotAllowed: 405
        case .headerTooLarge: 431
        }
    }

    var reason: String {
        switch self {
        case .ok: "OK"
        case .badRequest: "Bad Request"
        case .notFound: "Not Found"
        case .methodNotAllowed: "Method Not Allowed"
        case .headerTooLarge: "Request Header Fields Too Large"
        }
    }

    static func response(_ status: HTTPStatus, contentLength: Int, body: [UInt8]) -> [UInt8] {
        let type = status == .ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8"
        var head = "HTTP/1.1 \(status.code) \(status.reason)\r\nContent-Type: \(type)\r\n"
        head += "Content-Length: \(contentLength)\r\nConnection: close\r\n"
        if status == .methodNotAllowed { head += "Allow: GET, HEAD\r\n" }
        head += "\r\n"
        return Array(head.utf8) + body
    }
}
