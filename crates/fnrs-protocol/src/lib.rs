//! The function formats of Fn's protocol factory: http-stream over a unix socket; default, http, json and cloudevent over stdin/stdout
