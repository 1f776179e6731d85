//! The last resort: what the customer gets when the cache misses and every
//! provider failed or is OPEN. Never a 5xx and never a hang: either the closest
//! answer from the knowledge base, clearly marked as such, or an honest apology
//! with a ticket number for a human agent, whose ticket it stores.

use super::recorder::REDACTED;
use crate::knowledge;
use crate::shared::{AttemptSummary, ChatTurn, Image, ImageSource, TurnPart};
use crate::store::audit::AuditWriter;
use crate::store::{Store, Ticket};
use std::time::Duration;

/// The apology when no ticket could be stored.
const APOLOGY_WITHOUT_TICKET: &str = "I'm sorry: our assistants can't answer right now, and I \
could not open a ticket for you either. Please try again in a few minutes, or contact our \
support team by email.";

/// Keyword score a knowledge-base topic needs to be offered; one stray common
/// word is not enough to risk a wrong answer.
const MIN_SCORE: usize = 2;

/// Marks a knowledge-base answer so the customer knows what they are reading.
pub const KNOWN_ANSWER_NOTICE: &str =
    "Our assistants are unavailable at the moment, so here is the closest \
answer from our help center (it may not fit your exact question):";

/// What the last resort says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LastResortReply {
    /// The closest knowledge-base answer, marked as such.
    KnownAnswer {
        /// The knowledge-base topic it comes from.
        topic: &'static str,
        /// The full reply.
        text: String,
    },
    /// An apology with the ticket a human agent will pick up.
    Apology {
        /// The ticket's id, e.g. `T-7K3M9Q2A`.
        ticket_id: String,
        /// The full reply.
        text: String,
    },
    /// An apology without a ticket: one could not be stored, and a number that
    /// leads nowhere must not be given.
    ApologyWithoutTicket {
        /// The full reply.
        text: String,
    },
}

impl LastResortReply {
    /// The reply's text.
    pub fn text(&self) -> &str {
        match self {
            LastResortReply::KnownAnswer { text, .. }
            | LastResortReply::Apology { text, .. }
            | LastResortReply::ApologyWithoutTicket { text } => text,
        }
    }

    /// The ticket opened, if any.
    pub fn ticket_id(&self) -> Option<&str> {
        match self {
            LastResortReply::Apology { ticket_id, .. } => Some(ticket_id),
            LastResortReply::KnownAnswer { .. } | LastResortReply::ApologyWithoutTicket { .. } => {
                None
            }
        }
    }
}

/// A fresh ticket id: short enough to read out on the phone.
pub fn new_ticket_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bits = uuid::Uuid::new_v4().as_u128();
    let code: String = (0..8)
        .map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize] as char)
        .collect();
    format!("T-{code}")
}

/// The reply to `question` when no provider could answer.
pub fn reply(question: &str) -> LastResortReply {
    if let Some(topic) = knowledge::closest(question, MIN_SCORE) {
        return LastResortReply::KnownAnswer {
            topic: topic.id,
            text: format!("{KNOWN_ANSWER_NOTICE}\n\n{}", topic.answer),
        };
    }
    let ticket_id = new_ticket_id();
    let text = format!(
        "I'm sorry: our assistants can't answer right now. I've opened ticket {ticket_id} with your \
question, and a member of our support team will reply to you here as soon as possible. You don't \
need to repeat anything; quoting {ticket_id} helps if you contact us another way."
    );
    LastResortReply::Apology { ticket_id, text }
}

/// The reply when the customer's conversation already has an open ticket.
fn still_open(ticket_id: String) -> LastResortReply {
    let text = format!(
        "I'm sorry: our assistants still can't answer right now. Your ticket {ticket_id} is still \
open with this conversation, and a member of our support team will reply to you here as soon as \
possible."
    );
    LastResortReply::Apology { ticket_id, text }
}

/// Longest the last resort looks for a conversation's open ticket: past it, a
/// new ticket is opened rather than the customer kept waiting on the database.
const OPEN_TICKET_LOOKUP: Duration = Duration::from_millis(500);

/// The conversation as a ticket keeps it (JSON): a picture sent inline is
/// named where it was shown, not kept. Megabytes of base64 in every ticket of
/// an outage would fill the audit queue and the database; a linked picture
/// stays, as the agent can open it.
fn transcript(turns: &[ChatTurn]) -> String {
    let kept: Vec<ChatTurn> = turns
        .iter()
        .map(|turn| {
            if turn.images.is_empty() {
                return turn.clone();
            }
            // Built field by field: cloning the turn would copy its images' bytes.
            let mut kept = ChatTurn {
                role: turn.role,
                content: String::with_capacity(turn.content.len() + 32),
                tool_calls: turn.tool_calls.clone(),
                tool_call_id: turn.tool_call_id.clone(),
                images: Vec::new(),
            };
            let mut images = Vec::new();
            for part in turn.parts() {
                match part {
                    TurnPart::Text(text) => kept.content.push_str(text),
                    TurnPart::Image(image) => match &image.source {
                        ImageSource::Url { .. } => images.push(Image {
                            at: kept.content.len(),
                            ..image.clone()
                        }),
                        ImageSource::Data { media_type, base64 } => {
                            kept.content.push_str(&format!(
                                "[picture: {media_type}, {} KB, not kept]",
                                (base64.len() * 3 / 4).div_ceil(1024)
                            ));
                        }
                    },
                }
            }
            kept.images = images;
            kept
        })
        .collect();
    serde_json::to_string(&kept).unwrap_or_default()
}

/// The last resort of one gateway, with where its tickets go.
pub(super) struct LastResort {
    /// The audit's writer, through which tickets are stored and acknowledged.
    pub audit: Option<AuditWriter>,
    /// Where a conversation's open ticket is looked up, and where tickets go
    /// when the audit is off (only to measure its cost).
    pub store: Option<Store>,
    /// Store `[redacted]` instead of customer text.
    pub redact: bool,
}

/// What a ticket says about the request that opened it.
pub(super) struct TicketContext<'a> {
    /// The request's id.
    pub request_id: &'a str,
    /// When it arrived (Unix ms).
    pub created_at_ms: i64,
    /// The conversation, the customer's question last.
    pub turns: &'a [ChatTurn],
    /// The attempts that failed.
    pub attempts: &'a [AttemptSummary],
    /// The chat page's conversation, when the request came from it.
    pub conversation_id: Option<&'a str>,
}

impl LastResort {
    /// The reply to a request no provider could answer; an apology's ticket is
    /// stored before the customer is told its number.
    pub async fn answer(&self, context: TicketContext<'_>) -> LastResortReply {
        let question = context
            .turns
            .last()
            .map(|t| t.content.as_str())
            .unwrap_or_default();
        let reply = reply(question);
        // A customer who writes again during an outage keeps the ticket they
        // were given: one ticket a conversation for the agents, not one a message.
        if let (LastResortReply::Apology { .. }, Some(conversation)) =
            (&reply, context.conversation_id)
        {
            if let Some(open) = self.open_ticket_of(conversation).await {
                tracing::warn!(request_id = %context.request_id, ticket = %open, "every provider failed: last resort, the conversation's ticket is still open");
                if !self.redact {
                    self.refresh_conversation(&open, context.turns).await;
                }
                return still_open(open);
            }
        }
        let topic = match &reply {
            LastResortReply::KnownAnswer { topic, .. } => Some(*topic),
            _ => None,
        };
        tracing::warn!(request_id = %context.request_id, ?topic, ticket = ?reply.ticket_id(), "every provider failed: last resort");
        if let Some(ticket_id) = reply.ticket_id() {
            let ticket = Ticket {
                id: ticket_id.to_string(),
                created_at_ms: context.created_at_ms,
                request_id: context.request_id.to_string(),
                question: if self.redact {
                    REDACTED.into()
                } else {
                    question.to_string()
                },
                conversation_json: if self.redact {
                    "[]".into()
                } else {
                    transcript(context.turns)
                },
                failure_json: serde_json::to_string(context.attempts).unwrap_or_default(),
                conversation_id: context.conversation_id.map(str::to_string),
            };
            let id = ticket.id.clone();
            let durable = match (&self.audit, &self.store) {
                (Some(audit), _) => audit.ticket(ticket).await,
                (None, Some(store)) => store.insert_ticket(&ticket).await.is_ok(),
                (None, None) => false,
            };
            if !durable {
                tracing::error!(ticket = %id, "could not store the ticket: the customer is not given its number");
                return LastResortReply::ApologyWithoutTicket {
                    text: APOLOGY_WITHOUT_TICKET.into(),
                };
            }
        }
        reply
    }

    /// Gives the open ticket `id` the conversation as it is now, so the agent
    /// who picks it up reads what the customer wrote since, not the snapshot of
    /// when it opened. Bounded like the lookup: the turns are on record in
    /// `messages` either way, so a slow database costs the ticket's copy only.
    async fn refresh_conversation(&self, id: &str, turns: &[ChatTurn]) {
        let Some(store) = self.store.as_ref() else {
            return;
        };
        let json = transcript(turns);
        match tokio::time::timeout(
            OPEN_TICKET_LOOKUP,
            store.update_ticket_conversation(id, &json),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::warn!(ticket = %id, error = %err, "could not update the ticket's conversation")
            }
            Err(_) => {
                tracing::warn!(ticket = %id, "the ticket's conversation was not updated in time")
            }
        }
    }

    /// The conversation's open ticket, if the store can say within
    /// [`OPEN_TICKET_LOOKUP`]; otherwise none, and a new one is opened.
    async fn open_ticket_of(&self, conversation: &str) -> Option<String> {
        let store = self.store.as_ref()?;
        match tokio::time::timeout(OPEN_TICKET_LOOKUP, store.open_ticket_of(conversation)).await {
            Ok(Ok(ticket)) => ticket,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "could not look up the conversation's open ticket");
                None
            }
            Err(_) => {
                tracing::warn!("the conversation's open ticket was not found in time");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::ImageType;

    #[test]
    fn a_tickets_transcript_names_inline_pictures_and_keeps_linked_ones() {
        let mut turn = ChatTurn::user("Look: and here.");
        let linked = Image {
            source: ImageSource::Url {
                url: "https://shop.example/a.png".into(),
            },
            detail: None,
            at: "Look: and here.".len(),
        };
        turn.images = vec![
            Image {
                source: ImageSource::Data {
                    media_type: ImageType::Png,
                    base64: "A".repeat(4096),
                },
                detail: None,
                at: "Look: ".len(),
            },
            linked.clone(),
        ];
        let kept: Vec<ChatTurn> = serde_json::from_str(&transcript(&[turn])).unwrap();
        assert_eq!(
            kept[0].content,
            "Look: [picture: image/png, 3 KB, not kept]and here."
        );
        assert_eq!(
            kept[0].images,
            vec![Image {
                at: kept[0].content.len(),
                ..linked
            }]
        );
    }

    #[test]
    fn a_clear_topic_gets_the_marked_known_answer() {
        let reply = reply("How do I reset my password?");
        assert!(reply.text().starts_with(KNOWN_ANSWER_NOTICE));
        assert!(reply.text().contains("reset link"));
        assert_eq!(reply.ticket_id(), None);
    }

    #[test]
    fn anything_else_gets_an_apology_with_a_ticket() {
        let reply = reply("My blender makes a strange noise");
        let ticket = reply.ticket_id().expect("a ticket").to_string();
        assert!(ticket.starts_with("T-") && ticket.len() == 10, "{ticket}");
        assert!(reply.text().contains(&ticket));
        assert_ne!(new_ticket_id(), new_ticket_id());
    }
}
