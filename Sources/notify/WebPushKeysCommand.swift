import ArgumentParser
import Delivery

/// `notify webpush-keys`: a new VAPID key pair for Web Push.
struct WebPushKeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webpush-keys",
        abstract: "Print a new VAPID key pair for Web Push, as environment lines.",
        discussion: """
            Set VAPID_PRIVATE_KEY (and VAPID_SUBJECT) on the dispatcher and the gateway; browsers subscribe with \
            the public key, which the gateway serves at GET /v1/channels/webpush/key. A new key invalidates every \
            existing subscription, so make one once per deployment and keep it secret.
            """
    )

    func run() {
        let key = VAPIDKey.generate()
        print("VAPID_PRIVATE_KEY=\(key.privateKeyBase64URL)")
        print("VAPID_PUBLIC_KEY=\(key.publicKey)")
    }
}
