// The gateway: HTTP, WebSocket and SSE.
