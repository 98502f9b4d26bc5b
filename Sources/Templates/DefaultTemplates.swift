/// The templates notify ships, by file name (`<kind>.<channel>.<part>`).
/// A channel without its own title, body or action uses the in-app one;
/// every email has the same HTML layout unless a file replaces it.
enum DefaultTemplates {
    static let all: [(String, String)] = {
        let actors = "{{username}}{{#has_others}} and {{others}} {{others_word}}{{/has_others}}"
        let kinds: [(kind: String, title: String, action: String)] = [
            ("post.like", actors + " liked your post", "{{app_url}}/posts/{{resource_id_url}}"),
            ("comment.like", actors + " liked your comment", "{{app_url}}/comments/{{resource_id_url}}"),
            ("reply.post", "{{username}} replied to your post", "{{app_url}}/posts/{{resource_id_url}}"),
            ("reply.comment", "{{username}} replied to your comment", "{{app_url}}/comments/{{resource_id_url}}"),
            ("user.follow", actors + " started following you", "{{app_url}}/users/{{trigger_user}}"),
        ]
        var templates: [(String, String)] = []
        for (kind, title, action) in kinds {
            templates.append((kind + ".inapp.title", title))
            templates.append((kind + ".inapp.body", "{{excerpt}}"))
            templates.append((kind + ".inapp.action", action))
            templates.append((kind + ".email.html", emailHTML))
        }
        return templates
    }()

    /// A plain, inline-styled layout that mail clients render alike.
    static let emailHTML = """
        <!doctype html>
        <html><body style="margin:0;padding:24px;background:#f5f5f7;font-family:-apple-system,Segoe UI,Roboto,sans-serif;color:#1d1d1f">
        <table role="presentation" width="100%" style="max-width:560px;margin:0 auto;background:#fff;border-radius:12px;padding:24px">
        <tr><td>
        <h1 style="font-size:18px;margin:0 0 12px">{{title}}</h1>
        {{#body}}<p style="font-size:15px;line-height:1.5;margin:0 0 20px;color:#424245">{{body}}</p>{{/body}}
        <p style="margin:0 0 24px"><a href="{{action_url}}" style="background:#0071e3;color:#fff;text-decoration:none;padding:10px 18px;border-radius:8px;font-size:15px">Open</a></p>
        <p style="font-size:12px;color:#86868b;margin:0">You get these emails because email notifications are on. <a href="{{unsubscribe_url}}" style="color:#86868b">Unsubscribe</a></p>
        </td></tr>
        </table>
        </body></html>
        """
}
