//! The customer chat: a question goes to the gateway through the `ask` server
//! function and the answer streams back token by token as newline-delimited
//! [`ChatEvent`]s.

use crate::shared::{ChatEvent, ChatTurn, Role};
use leptos::prelude::*;
use leptos::server_fn::codec::{Json, StreamingText, TextStream};

/// Runs a conversation through the gateway and streams the answer as
/// newline-delimited JSON [`ChatEvent`]s: `started`, `delta`…, then `done` or `failed`.
#[server(input = Json, output = StreamingText, endpoint = "ask")]
pub async fn ask(
    conversation_id: Option<String>,
    turns: Vec<ChatTurn>,
) -> Result<TextStream, ServerFnError> {
    use crate::api::AppState;
    use crate::gateway::{AnswerEvent, GatewayError, GatewayRequest};
    use crate::shared::Surface;
    use futures::StreamExt;

    fn line(event: &ChatEvent) -> String {
        let mut line = serde_json::to_string(event).unwrap_or_default();
        line.push('\n');
        line
    }

    /// The caller's mistake: a 400 (a server function's error is otherwise a 500).
    fn refused(message: impl std::fmt::Display) -> ServerFnError {
        if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
            response.set_status(axum::http::StatusCode::BAD_REQUEST);
        }
        ServerFnError::new(message)
    }

    // The page has no way to show a picture; images come only through /v1,
    // whose edge checks each one. Unchecked ones must not reach a provider.
    if turns.iter().any(|t| !t.images.is_empty()) {
        return Err(refused(
            "the chat page takes text only; send pictures through /v1/chat/completions",
        ));
    }
    let state = expect_context::<AppState>();
    // The browser's id is only trusted if it looks like one we issued.
    let conversation_id = conversation_id
        .filter(|id| id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or_else(|| format!("conv-{}", uuid::Uuid::new_v4().simple()));
    let mut request = GatewayRequest::question(Surface::Chat, "");
    request.turns = turns;
    request.conversation_id = Some(conversation_id.clone());
    match state.gateway.stream(request).await {
        Ok(answer) => {
            let started = ChatEvent::Started {
                served_by: answer.served_by.clone(),
                conversation_id,
            };
            // The chat page offers the model no tools, so no tool call can come.
            let events = answer.events.filter_map(|event| {
                futures::future::ready(match event {
                    AnswerEvent::Text(text) => Some(ChatEvent::Delta { text }),
                    AnswerEvent::ToolCall(_) => None,
                    AnswerEvent::Restarted { served_by, .. } => {
                        Some(ChatEvent::Restarted { served_by })
                    }
                    AnswerEvent::Done {
                        served_by,
                        elapsed_ms,
                        attempts,
                        ..
                    } => Some(ChatEvent::Done {
                        served_by,
                        elapsed_ms,
                        attempts,
                    }),
                    AnswerEvent::Failed { message } => Some(ChatEvent::Failed { message }),
                })
            });
            let lines = futures::stream::once(async move { line(&started) })
                .chain(events.map(|event| line(&event)))
                .map(Ok);
            Ok(TextStream::new(lines))
        }
        Err(err @ GatewayError::BadRequest { .. }) => Err(refused(err)),
        Err(err) => {
            let failed = ChatEvent::Failed {
                message: format!("Sorry, this question could not be answered: {err}"),
            };
            Ok(TextStream::new(futures::stream::once(async move {
                Ok(line(&failed))
            })))
        }
    }
}

/// Where a reply stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplyState {
    Waiting,
    Streaming,
    Done,
    Failed,
}

impl ReplyState {
    fn as_str(self) -> &'static str {
        match self {
            ReplyState::Waiting => "waiting",
            ReplyState::Streaming => "streaming",
            ReplyState::Done => "done",
            ReplyState::Failed => "failed",
        }
    }
}

/// One bubble of the conversation.
#[derive(Clone, Debug)]
struct Bubble {
    role: Role,
    text: String,
    state: ReplyState,
    served_by: Option<String>,
    elapsed_ms: Option<u64>,
    note: Option<String>,
    /// The reply started over after an interruption (said, not alarming).
    restarted: bool,
}

impl Bubble {
    fn apply(&mut self, event: ChatEvent) {
        match event {
            ChatEvent::Started { served_by, .. } => {
                self.served_by = Some(served_by.to_string());
                self.state = ReplyState::Streaming;
            }
            ChatEvent::Delta { text } => {
                self.text.push_str(&text);
                self.state = ReplyState::Streaming;
            }
            ChatEvent::Restarted { served_by } => {
                // Never show a reply glued from two: the new one replaces the old.
                self.text.clear();
                self.served_by = Some(served_by.to_string());
                self.restarted = true;
                self.state = ReplyState::Streaming;
            }
            ChatEvent::Done {
                served_by,
                elapsed_ms,
                ..
            } => {
                self.served_by = Some(served_by);
                self.elapsed_ms = Some(elapsed_ms);
                self.state = ReplyState::Done;
            }
            ChatEvent::Failed { message } => {
                self.note = Some(message);
                self.state = ReplyState::Failed;
            }
        }
    }
}

/// The customer chat page.
#[component]
pub fn ChatPage() -> impl IntoView {
    let bubbles = RwSignal::new(Vec::<Bubble>::new());
    let draft = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    // Issued by the server with the first answer; sent back to keep the history together.
    let conversation = RwSignal::new(None::<String>);

    let send = move || {
        let question = draft.get_untracked().trim().to_string();
        if question.is_empty() || busy.get_untracked() {
            return;
        }
        draft.set(String::new());
        busy.set(true);
        // The whole conversation goes to the gateway so providers see the history.
        let mut turns: Vec<ChatTurn> = bubbles
            .get_untracked()
            .iter()
            .filter(|b| b.state != ReplyState::Failed && !b.text.is_empty())
            .map(|b| ChatTurn::new(b.role, b.text.clone()))
            .collect();
        turns.push(ChatTurn::user(question.clone()));
        bubbles.update(|list| {
            list.push(Bubble {
                role: Role::User,
                text: question,
                state: ReplyState::Done,
                served_by: None,
                elapsed_ms: None,
                note: None,
                restarted: false,
            });
            list.push(Bubble {
                role: Role::Assistant,
                text: String::new(),
                state: ReplyState::Waiting,
                served_by: None,
                elapsed_ms: None,
                note: None,
                restarted: false,
            });
        });
        let apply = move |event: ChatEvent| {
            if let ChatEvent::Started {
                conversation_id, ..
            } = &event
            {
                conversation.set(Some(conversation_id.clone()));
            }
            bubbles.update(|list| {
                if let Some(last) = list.last_mut() {
                    last.apply(event);
                }
            });
        };
        leptos::task::spawn_local(async move {
            use futures::StreamExt;
            match ask(conversation.get_untracked(), turns).await {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    let mut buffer = String::new();
                    // A chunk may hold several lines or part of one.
                    while let Some(chunk) = stream.next().await {
                        let Ok(chunk) = chunk else {
                            apply(ChatEvent::Failed {
                                message: "The connection dropped; the answer is incomplete.".into(),
                            });
                            break;
                        };
                        buffer.push_str(&chunk);
                        while let Some(end) = buffer.find('\n') {
                            let line: String = buffer.drain(..=end).collect();
                            if let Ok(event) = serde_json::from_str::<ChatEvent>(line.trim()) {
                                apply(event);
                            }
                        }
                    }
                }
                Err(err) => apply(ChatEvent::Failed {
                    message: err.to_string(),
                }),
            }
            bubbles.update(|list| {
                if let Some(last) = list.last_mut() {
                    if matches!(last.state, ReplyState::Waiting | ReplyState::Streaming) {
                        last.apply(ChatEvent::Failed {
                            message: "The answer ended unexpectedly; it may be incomplete.".into(),
                        });
                    }
                }
            });
            busy.set(false);
        });
    };

    view! {
        <section class="chat" aria-label="Customer support chat">
            <h1>"Acme Shop support"</h1>
            <p class="hint">"Ask about orders, refunds, passwords, shipping, billing…"</p>
            <ol class="messages" aria-live="polite">
                {move || {
                    bubbles
                        .get()
                        .into_iter()
                        .map(|b| {
                            let who = if b.role == Role::User { "user" } else { "assistant" };
                            let meta = (b.role == Role::Assistant).then(|| {
                                let served = b.served_by.clone().unwrap_or_else(|| "…".into());
                                let took = b
                                    .elapsed_ms
                                    .map(|ms| format!(" · {:.1} s", ms as f64 / 1000.0))
                                    .unwrap_or_default();
                                view! {
                                    <div class="meta">
                                        <span class="served-by">{served}</span>
                                        <span class="elapsed">{took}</span>
                                    </div>
                                }
                            });
                            view! {
                                <li class=format!("bubble {who}") data-state=b.state.as_str()>
                                    <div class="text">{b.text.clone()}</div>
                                    {b.restarted.then(|| view! {
                                        <div class="note restarted" role="status">
                                            "Answer restarted: the first attempt was interrupted, so this reply was started over."
                                        </div>
                                    })}
                                    {b.note.clone().map(|n| view! { <div class="note" role="alert">{n}</div> })}
                                    {meta}
                                </li>
                            }
                        })
                        .collect_view()
                }}
            </ol>
            <form
                class="composer"
                on:submit=move |ev| {
                    ev.prevent_default();
                    send();
                }
            >
                <label for="question" class="visually-hidden">"Your question"</label>
                <input
                    id="question"
                    name="question"
                    type="text"
                    autocomplete="off"
                    placeholder="Type your question…"
                    prop:value=move || draft.get()
                    on:input=move |ev| draft.set(event_target_value(&ev))
                />
                <button type="submit" disabled=move || busy.get()>
                    "Send"
                </button>
            </form>
        </section>
    }
}
