import Foundation
import Notifications
import Templates
import Testing
import TestSupport

@Suite("Templates")
struct TemplateTests {
    /// A stored record of `kind` by way of the repository, so it is what
    /// the worker would render.
    private func record(_ json: String, subject: String = "notifications.post.like") throws -> NotificationRecord {
        let event = try EventValidator(subjects: EventSubjects(prefix: "notifications"))
            .validate(subject: subject, body: Array(json.utf8), now: 1_750_000_000).get()
        return NotificationRecord(event: event, id: "01TEST", receivedAt: 1_750_000_000_000)
    }

    private let like = #"{"owner":"u1","trigger_user":"ana","username":"Ana","action":1,"resource_type":"POST","resource_id":"p/1 #2","created_at":1750000000,"excerpt":"Sunset"}"#

    @Test("the defaults render every creating kind, in every channel")
    func defaults() throws {
        let templates = try NotificationTemplates(appURL: "https://app.example.com")
        let like = try record(like)
        let rendered = try #require(templates.render(like, channel: .email, unsubscribeURL: "https://u.example/x"))
        #expect(rendered.title == "Ana liked your post")
        #expect(rendered.body == "Sunset")
        #expect(rendered.actionURL == "https://app.example.com/posts/p%2F1%20%232")
        #expect(rendered.html?.contains("https://u.example/x") == true)
        #expect(rendered.html?.contains("<h1") == true)
        let follow = try record(#"{"owner":"u1","trigger_user":"cy","action":5,"resource_type":"USER","resource_id":"u1","created_at":1750000000}"#, subject: "notifications.user.follow")
        #expect(templates.inApp(follow)?.title == "cy started following you")
        let reply = try record(#"{"owner":"u1","trigger_user":"ben","username":"Ben <b>","action":3,"resource_type":"POST","resource_id":"p1","created_at":1750000000,"excerpt":"Nice & warm"}"#, subject: "notifications.reply.post")
        let email = try #require(templates.render(reply, channel: .email))
        #expect(email.title == "Ben <b> replied to your post", "titles are text: nothing escaped")
        #expect(email.html?.contains("Ben &lt;b&gt; replied") == true, "the HTML part escapes values")
        #expect(email.html?.contains("Nice &amp; warm") == true)
    }

    @Test("a directory overrides one part; the rest stays default")
    func overrides() async throws {
        try await withTemporaryDirectory { directory in
            try "{{username}} ♥ your post{{#has_others}} (+{{others}}){{/has_others}}".write(
                toFile: directory.file("post.like.webpush.title.mustache"), atomically: true, encoding: .utf8)
            let templates = try NotificationTemplates(directory: directory.path, appURL: "https://app.example.com")
            let like = try record(like)
            #expect(templates.render(like, channel: .webpush)?.title == "Ana ♥ your post")
            #expect(templates.render(like, channel: .webpush)?.body == "Sunset")
            #expect(templates.inApp(like)?.title == "Ana liked your post")
        }
    }

    @Test("an unknown variable, a bad file name or bad syntax fails at load, naming the file")
    func loadErrors() async throws {
        let cases: [(file: String, text: String, message: String)] = [
            ("post.like.email.title.mustache", "{{usernme}} liked it", "unknown variable 'usernme'"),
            ("post.like.inapp.body.mustache", "{{#has_others}}{{other}}{{/has_others}}", "unknown variable 'other'"),
            ("post.like.inapp.body.mustache", "{{^has_others}}{{lonely}}{{/has_others}}", "unknown variable 'lonely'"),
            ("post.like.inapp.title.mustache", "{{unsubscribe_url}}", "unknown variable 'unsubscribe_url'"),
            ("post.like.sms.title.mustache", "hi", "template files are named"),
            ("post.unlike.inapp.title.mustache", "hi", "template files are named"),
            ("post.like.inapp.html.mustache", "hi", "template files are named"),
            ("post.like.inapp.title.mustache", "{{#has_others}}unclosed", "not a valid Mustache template"),
        ]
        for (file, text, message) in cases {
            try await withTemporaryDirectory { directory in
                try text.write(toFile: directory.file(file), atomically: true, encoding: .utf8)
                do throws(TemplateError) {
                    _ = try NotificationTemplates(directory: directory.path, appURL: "https://app.example.com")
                    Issue.record("\(file) with \(text) loaded")
                } catch {
                    #expect(error.message.contains(message), "\(error.message)")
                    #expect(error.message.contains(file) || message == "template files are named", "\(error.message)")
                }
            }
        }
    }

    @Test("a missing directory is an error")
    func missingDirectory() {
        #expect(throws: TemplateError.self) { try NotificationTemplates(directory: "/nonexistent/templates", appURL: "https://a.example") }
    }

    @Test("a title is one line, whatever the event says")
    func oneLineTitle() throws {
        let templates = try NotificationTemplates(appURL: "https://app.example.com")
        let like = try record(#"{"owner":"u1","trigger_user":"ana","username":"Ana\r\nBcc: x@evil.example","action":1,"resource_type":"POST","resource_id":"p","created_at":1750000000}"#)
        let title = try #require(templates.render(like, channel: .email)?.title)
        #expect(!title.contains("\n") && !title.contains("\r"))
    }
}
