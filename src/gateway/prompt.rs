//! Per-model system prompt templates.
//!
//! Each provider's model gets its own framing of the support assistant (from
//! config); the caller's own system messages are slotted in where the template
//! says `{system}`, so a tenant's instructions survive whichever model answers.

/// A system prompt template with an optional `{system}` slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptTemplate {
    /// The template text as configured.
    template: String,
}

impl PromptTemplate {
    /// Wraps a template text.
    pub fn new(template: impl Into<String>) -> Self {
        Self {
            template: template.into(),
        }
    }

    /// Renders the system prompt for one request. Caller text is appended when
    /// the template has no slot, so it is never silently dropped.
    pub fn render(&self, caller_system: &str) -> String {
        let caller_system = caller_system.trim();
        let rendered = if self.template.contains("{system}") {
            self.template.replace("{system}", caller_system)
        } else if caller_system.is_empty() {
            self.template.clone()
        } else {
            format!("{}\n\n{caller_system}", self.template)
        };
        rendered.trim().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_the_slot_or_appends() {
        let slotted = PromptTemplate::new("Be brief. {system}");
        assert_eq!(
            slotted.render("Reply in French."),
            "Be brief. Reply in French."
        );
        assert_eq!(slotted.render(""), "Be brief.");
        let plain = PromptTemplate::new("Be brief.");
        assert_eq!(
            plain.render("Reply in French."),
            "Be brief.\n\nReply in French."
        );
    }
}
