import JSON
@testable import Notifications
import Testing

@Suite("Strict JSON parser")
struct JSONParserTests {
    static func parse(_ text: String) throws(JSONSyntaxError) -> JSONValue {
        try JSONParser.parse(Array(text.utf8))
    }

    @Test func parsesEveryValueType() throws {
        let value = try Self.parse(#" {"s":"a\"b\\c\/\n\t\u00e9\ud83d\ude00","i":-42,"z":0,"f":1.5,"e":1e3,"t":true,"n":null,"a":[1,[],{}],"o":{"x":false}} "#)
        guard case .object(let object) = value else { Issue.record("not an object"); return }
        #expect(object["s"] == .string("a\"b\\c/\n\té😀"))
        #expect(object["i"] == .integer(-42))
        #expect(object["z"] == .integer(0))
        #expect(object["f"] == .nonIntegerNumber)
        #expect(object["e"] == .nonIntegerNumber)
        #expect(object["t"] == .bool(true))
        #expect(object["n"] == .null)
        #expect(object["a"] == .array([.integer(1), .array([]), .object([:])]))
        #expect(object["o"] == .object(["x": .bool(false)]))
    }

    @Test func integersAtTheEdgesOf64Bits() throws {
        #expect(try Self.parse("9223372036854775807") == .integer(.max))
        #expect(try Self.parse("-9223372036854775808") == .integer(.min))
        #expect(try Self.parse("9223372036854775808") == .nonIntegerNumber)
        #expect(try Self.parse("-9223372036854775809") == .nonIntegerNumber)
        #expect(try Self.parse("99999999999999999999999999") == .nonIntegerNumber)
    }

    @Test(arguments: [
        "", " ", "{", "}", "{\"a\":1,}", "[1,]", "{\"a\" 1}", "{a:1}", "'x'", "01", "1.", ".5", "-", "1e", "+1",
        "tru", "nul", "{\"a\":1}x", "\"unterminated", "\"bad \\q escape\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"",
        "\"\\ud800\\u0041\"", "\"raw \u{01} control\"", "\"tab\there\"", "NaN", "Infinity", "[1 2]", "{\"a\":1 \"b\":2}",
    ])
    func rejectsInvalidDocuments(text: String) {
        #expect(throws: JSONSyntaxError.self) { try Self.parse(text) }
    }

    @Test func rejectsDuplicateKeys() {
        let error = #expect(throws: JSONSyntaxError.self) { try Self.parse(#"{"owner":"a","owner":"b"}"#) }
        #expect(error?.message.contains("duplicate") == true)
        #expect(throws: JSONSyntaxError.self) { try Self.parse(#"{"o":{"k":1,"k":1}}"#) }
    }

    @Test func limitsNesting() throws {
        let allowed = String(repeating: "[", count: JSONParser.maxDepth) + String(repeating: "]", count: JSONParser.maxDepth)
        _ = try Self.parse(allowed)
        let tooDeep = String(repeating: "[", count: JSONParser.maxDepth + 1) + String(repeating: "]", count: JSONParser.maxDepth + 1)
        #expect(throws: JSONSyntaxError.self) { try Self.parse(tooDeep) }
        let hostile = String(repeating: "{\"a\":", count: 10_000) + "1" + String(repeating: "}", count: 10_000)
        #expect(throws: JSONSyntaxError.self) { try Self.parse(hostile) }
    }

    @Test func writerEscapesWhatJSONRequires() throws {
        var writer = JSONWriter()
        writer.string("q\" b\\ n\n t\t c\u{01} é 😀 \u{7F}")
        let text = String(decoding: writer.bytes, as: UTF8.self)
        #expect(text == #""q\" b\\ n\n t\t c\u0001 é 😀 \#u{7F}""#)
        #expect(try JSONParser.parse(writer.bytes) == .string("q\" b\\ n\n t\t c\u{01} é 😀 \u{7F}"))
    }
}
