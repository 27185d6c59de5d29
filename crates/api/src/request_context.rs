//! Per-request context that code deep in a handler needs without threading it through every
//! call: the request id (for error bodies). It lives in a task-local set by the outermost
//! middleware, which runs the handler inside its scope.

tokio::task_local! {
    static REQUEST_ID: String;
}

pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

pub(crate) async fn scope<F: std::future::Future>(request_id: String, future: F) -> F::Output {
    REQUEST_ID.scope(request_id, future).await
}
