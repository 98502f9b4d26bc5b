import Foundation
import Mustache
public import Notifications

/// What a notification says on one channel, rendered from its kind's
/// templates.
public struct RenderedMessage: Sendable, Hashable {
    public let title: String
    public let body: String
    /// The HTML part of an email; `nil` on other channels.
    public let html: String?
    /// Where following the notification leads (a link, a push's click).
    public let actionURL: String
}

/// Where a template is used: in the app (the record's `title`/`body`),
/// in email, or in a Web Push notification.
public enum TemplateChannel: String, Sendable, Hashable, CaseIterable {
    case inapp, email, webpush
}

/// A part of a message: `title`, `body`, `html` (email) and `action` (a URL).
public enum TemplatePart: String, Sendable, Hashable, CaseIterable {
    case title, body, html, action
}

/// A template that cannot be used; the message names the file and what
/// to fix.
public struct TemplateError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// The Mustache templates of every kind and channel: the defaults that ship
/// with notify, overridden by files in `TEMPLATES_DIR`.
///
/// A file is named `<kind>.<channel>.<part>.mustache`, for instance
/// `post.like.email.title.mustache` or `user.follow.inapp.body.mustache`.
/// Every variable a template names is checked when it loads: a misspelt
/// one is an error then, never an empty string in a sent message.
public struct NotificationTemplates: Sendable, NotificationTexts {
    private struct Key: Hashable {
        let kind: String
        let channel: TemplateChannel
        let part: TemplatePart
    }

    private let templates: [Key: MustacheTemplate]
    /// The web app's address, for links (`APP_URL`).
    public let appURL: String

    /// The variables every template may use.
    public static let variables: Set<String> = [
        "id", "kind", "owner", "trigger_user", "username", "user_picture", "action", "resource_type", "resource_id",
        "resource_id_url", "excerpt", "resource_title", "actor_count", "others", "others_word", "has_others", "app_url",
    ]
    /// What an email's HTML part may use on top: the rendered parts.
    public static let htmlVariables: Set<String> = ["title", "body", "action_url", "unsubscribe_url"]

    /// The defaults, overridden by the files in `directory` when given.
    public init(directory: String? = nil, appURL: String) throws(TemplateError) {
        self.appURL = appURL
        var templates: [Key: MustacheTemplate] = [:]
        for (name, text) in DefaultTemplates.all {
            guard let key = Self.key(fileName: name) else { throw TemplateError(message: "default template \(name) has a bad name") }
            templates[key] = try Self.compile(text, key: key, source: "the default template " + name)
        }
        if let directory {
            let files: [String]
            do {
                files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".mustache") }.sorted()
            } catch {
                throw TemplateError(message: "TEMPLATES_DIR '\(directory)' cannot be read: \(error.localizedDescription)")
            }
            for file in files {
                let name = String(file.dropLast(".mustache".count))
                guard let key = Self.key(fileName: name) else {
                    throw TemplateError(message: "\(directory)/\(file): template files are named <kind>.<channel>.<part>.mustache, with a kind of \(Self.kinds.sorted().joined(separator: ", ")), a channel of inapp, email, webpush and a part of title, body, html (email only), action")
                }
                let path = directory + "/" + file
                guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                    throw TemplateError(message: "\(path) cannot be read as UTF-8 text")
                }
                templates[key] = try Self.compile(text, key: key, source: path)
            }
        }
        self.templates = templates
    }

    /// Kinds that create notifications: the ones with templates.
    static let kinds = Set(EventKind.all.filter { $0.effect == .create }.map(\.name))

    private static func key(fileName name: String) -> Key? {
        let parts = name.split(separator: ".")
        guard parts.count >= 3, let part = TemplatePart(rawValue: String(parts[parts.count - 1])),
              let channel = TemplateChannel(rawValue: String(parts[parts.count - 2])) else { return nil }
        let kind = parts.dropLast(2).joined(separator: ".")
        guard kinds.contains(kind), part != .html || channel == .email else { return nil }
        return Key(kind: kind, channel: channel, part: part)
    }

    /// Parses `text` and checks every variable it names.
    private static func compile(_ text: String, key: Key, source: String) throws(TemplateError) -> MustacheTemplate {
        // Only HTML escapes its values; titles, bodies and links are text.
        let pragma = key.part == .html ? "" : "{{% CONTENT_TYPE: TEXT}}"
        let template: MustacheTemplate
        do {
            template = try MustacheTemplate(string: pragma + text)
        } catch {
            throw TemplateError(message: "\(source): not a valid Mustache template (\(error))")
        }
        let allowed = key.part == .html ? variables.union(htmlVariables) : variables
        let names = VariableProbe.names(in: template)
        if let unknown = names.subtracting(allowed).sorted().first {
            throw TemplateError(message: "\(source): unknown variable '\(unknown)'; templates may use \(allowed.sorted().joined(separator: ", "))")
        }
        return template
    }

    /// The template of `part` for `kind` on `channel`, else the in-app one.
    private func template(_ kind: String, _ channel: TemplateChannel, _ part: TemplatePart) -> MustacheTemplate? {
        templates[Key(kind: kind, channel: channel, part: part)] ?? templates[Key(kind: kind, channel: .inapp, part: part)]
    }

    /// `record` rendered for `channel`; `unsubscribeURL` is offered to an
    /// email's HTML part. `nil` for a kind without templates.
    public func render(_ record: NotificationRecord, channel: TemplateChannel, unsubscribeURL: String = "") -> RenderedMessage? {
        guard let kind = Self.kind(of: record), let (title, body) = texts(record, kind: kind, channel: channel),
              let action = template(kind, channel, .action) else { return nil }
        var context = TemplateContext(record: record, kind: kind, appURL: appURL)
        let actionURL = Self.trimmed(action.render(context))
        guard channel == .email, let html = templates[Key(kind: kind, channel: .email, part: .html)] else {
            return RenderedMessage(title: title, body: body, html: nil, actionURL: actionURL)
        }
        context.rendered = ["title": title, "body": body, "action_url": actionURL, "unsubscribe_url": unsubscribeURL]
        return RenderedMessage(title: title, body: body, html: html.render(context), actionURL: actionURL)
    }

    /// The title and body alone: what the worker stores on every record.
    private func texts(_ record: NotificationRecord, kind: String, channel: TemplateChannel) -> (String, String)? {
        guard let title = template(kind, channel, .title), let body = template(kind, channel, .body) else { return nil }
        let context = TemplateContext(record: record, kind: kind, appURL: appURL)
        return (Self.oneLine(title.render(context)), Self.trimmed(body.render(context)))
    }

    public func inApp(_ record: NotificationRecord) -> (title: String, body: String)? {
        guard let kind = Self.kind(of: record) else { return nil }
        return texts(record, kind: kind, channel: .inapp)
    }

    /// A title is one line: line breaks become spaces (a header injection
    /// into an email subject cannot start here).
    static func oneLine(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isLineBreak) else { return trimmed(text) }
        var scalars = String.UnicodeScalarView()
        for scalar in text.unicodeScalars { scalars.append(isLineBreak(scalar) ? " " : scalar) }
        return trimmed(String(scalars))
    }

    private static func isLineBreak(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x0A...0x0D, 0x85, 0x2028, 0x2029: true
        default: false
        }
    }

    /// `text` without white space at either end (cheap when there is none:
    /// the worker renders every notification).
    static func trimmed(_ text: String) -> String {
        let scalars = text.unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let last = scalars.lastIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        if first == scalars.startIndex && scalars.index(after: last) == scalars.endIndex { return text }
        return String(scalars[first...last])
    }

    private static func kind(of record: NotificationRecord) -> String? {
        EventKind.all.first { $0.effect == .create && $0.action == record.action && $0.resourceType == record.resourceType }?.name
    }
}

/// The variables of one record, computed when a template asks for one
/// (the worker renders every notification it stores: no dictionary of
/// every value is built for the two or three a title uses).
private struct TemplateContext: MustacheParent {
    let record: NotificationRecord
    let kind: String
    let appURL: String
    /// An email's rendered parts, for its HTML layout.
    var rendered: [String: String] = [:]

    private static let pathAllowed = CharacterSet.urlPathAllowed.subtracting(["/"])

    func child(named name: String) -> Any? {
        let others = max(0, (record.group?.actorCount ?? 1) - 1)
        switch name {
        case "username": return record.username ?? record.triggerUser
        case "has_others": return others > 0
        case "others": return String(others)
        case "others_word": return others == 1 ? "other" : "others"
        case "excerpt": return record.excerpt ?? ""
        case "resource_title": return record.resourceTitle ?? ""
        case "id": return record.id
        case "kind": return kind
        case "owner": return record.room?.name ?? record.owner
        case "trigger_user": return record.triggerUser
        case "user_picture": return record.userPicture ?? ""
        case "action": return String(record.action)
        case "resource_type": return record.resourceType
        case "resource_id": return record.resourceID
        case "resource_id_url": return record.resourceID.addingPercentEncoding(withAllowedCharacters: Self.pathAllowed) ?? record.resourceID
        case "actor_count": return String(others + 1)
        case "app_url": return appURL
        default: return rendered[name]
        }
    }
}

/// Finds the variables a template names: renders it twice against a
/// context that records every name asked for, once with every value
/// present (sections open) and once with every value false (inverted
/// sections open).
private final class VariableProbe: MustacheParent {
    var names: Set<String> = []
    let value: Any

    init(value: Any) {
        self.value = value
    }

    func child(named name: String) -> Any? {
        names.insert(name)
        return value
    }

    static func names(in template: MustacheTemplate) -> Set<String> {
        var names = Set<String>()
        for value in ["x", false] as [Any] {
            let probe = VariableProbe(value: value)
            _ = template.render(probe)
            names.formUnion(probe.names)
        }
        names.remove(".")
        return names
    }
}
