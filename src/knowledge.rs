//! The built-in support knowledge base: about twenty topics of an online shop,
//! each with the words that point to it and a helpful answer. The simulated
//! providers answer from it, and the last resort offers its closest answer when
//! every provider is down.

use crate::shared::{ChatTurn, Role};

/// One support topic.
pub struct Topic {
    /// Short id, shown nowhere but handy in tests.
    pub id: &'static str,
    /// Lower-case word stems that point to this topic; more hits win.
    pub keywords: &'static [&'static str],
    /// What a good support agent would answer.
    pub answer: &'static str,
}

/// Every topic the simulated providers know.
pub static TOPICS: &[Topic] = &[
    Topic { id: "order-status", keywords: &["where is my order", "order status", "track", "tracking", "package", "parcel", "arrive", "delivery date"], answer: "You can follow your order under Account → Orders: each order shows its status and, once shipped, a tracking link from the carrier. Orders usually ship within one business day and arrive in 2–5 business days. If the tracking has not moved for three days, reply here and we will open an investigation with the carrier." },
    Topic { id: "refund", keywords: &["refund", "money back", "reimburse", "charged back"], answer: "Refunds go back to the original payment method within 5–7 business days after we receive the returned item. You will get an email the moment the refund is issued; card statements can take a few more days to show it. Shipping costs are refunded too when the item arrived damaged or wrong." },
    Topic { id: "return", keywords: &["return", "send back", "exchange", "wrong size"], answer: "You can return most items within 30 days of delivery. Start the return under Account → Orders → Return item, print the prepaid label, and drop the parcel at any carrier point. Exchanges for another size are free; we ship the new item as soon as the return is scanned." },
    Topic { id: "password", keywords: &["password", "reset", "forgot", "log in", "login", "sign in", "locked out"], answer: "To reset your password, click \"Forgot password?\" on the sign-in page and enter your account email. We send a reset link that is valid for 30 minutes; check your spam folder if it does not arrive within a few minutes. After five failed sign-ins the account is locked for 15 minutes for your safety." },
    Topic { id: "shipping-cost", keywords: &["shipping cost", "shipping fee", "free shipping", "how much is shipping", "delivery cost"], answer: "Standard shipping is free on orders over $50 and $4.95 below that. Express shipping (1–2 business days) costs $12.95. The exact price appears at checkout before you pay." },
    Topic { id: "international", keywords: &["international", "abroad", "overseas", "ship to", "country", "customs"], answer: "We ship to 40 countries. International delivery takes 5–12 business days, and the checkout shows any customs duties up front so there are no surprises at the door." },
    Topic { id: "cancel-order", keywords: &["cancel my order", "cancel the order", "cancel order", "cancel an order"], answer: "You can cancel an order yourself within one hour of placing it under Account → Orders → Cancel. After that it may already be packed; in that case simply refuse the delivery or return it for free and we refund you in full." },
    Topic { id: "subscription", keywords: &["subscription", "membership", "plan", "renew", "unsubscribe"], answer: "Your membership renews automatically each month. You can pause or cancel it any time under Account → Membership; cancelling keeps your benefits until the end of the period you already paid for, and nothing further is charged." },
    Topic { id: "billing", keywords: &["billing", "invoice", "charged twice", "double charge", "receipt", "payment failed", "charge"], answer: "Every order has a downloadable invoice under Account → Orders. If you see a charge twice, one is usually a temporary authorisation that your bank releases within 3 business days. If both charges remain after that, tell us and we will refund the duplicate immediately." },
    Topic { id: "payment-methods", keywords: &["payment method", "pay with", "paypal", "credit card", "apple pay", "klarna", "installments"], answer: "We accept Visa, Mastercard, American Express, PayPal, Apple Pay and Google Pay. For orders over $100 you can also pay in three interest-free instalments at checkout." },
    Topic { id: "damaged", keywords: &["damaged", "broken", "defective", "arrived broken", "faulty", "not working"], answer: "I'm sorry your item arrived damaged. Please send a photo of the item and the packaging from Account → Orders → Report a problem; we ship a replacement right away at no cost, or refund you if you prefer. You don't need to send the damaged item back." },
    Topic { id: "wrong-item", keywords: &["wrong item", "wrong product", "not what i ordered", "missing item", "incomplete order"], answer: "Sorry about the mix-up! Report it under Account → Orders → Report a problem and we will send the right item immediately with express shipping. Keep the wrong item until the prepaid return label arrives by email." },
    Topic { id: "account-email", keywords: &["change my email", "email address", "update my email", "change email"], answer: "You can change your email address under Account → Profile. We send a confirmation link to the new address, and the change takes effect once you click it. Your order history stays with your account." },
    Topic { id: "delete-account", keywords: &["delete my account", "close my account", "remove my data", "gdpr", "privacy"], answer: "You can delete your account under Account → Privacy → Delete account. We erase your personal data within 30 days, keeping only invoices that the law requires us to retain. You can also download a copy of your data from the same page first." },
    Topic { id: "discount", keywords: &["discount", "coupon", "promo", "voucher", "code", "sale"], answer: "Enter a discount code in the \"Promo code\" field at checkout. One code can be used per order, and codes cannot be applied to orders that are already placed. If a valid code is rejected, tell us the code and we'll check it." },
    Topic { id: "gift-card", keywords: &["gift card", "gift voucher", "balance"], answer: "Gift cards never expire and can be combined with any payment method. Check your balance by entering the card number at checkout or under Account → Gift cards." },
    Topic { id: "warranty", keywords: &["warranty", "guarantee", "repair"], answer: "All electronics come with a two-year warranty. If something stops working, open a warranty claim under Account → Orders → Report a problem; we repair or replace the item, and shipping both ways is on us." },
    Topic { id: "stock", keywords: &["in stock", "out of stock", "back in stock", "restock", "available", "availability"], answer: "When an item is out of stock, click \"Notify me\" on its page and we email you as soon as it is back. Most items are restocked within two weeks." },
    Topic { id: "change-address", keywords: &["change address", "wrong address", "delivery address", "shipping address", "change the address"], answer: "You can change the delivery address within one hour of ordering under Account → Orders → Edit. Once the parcel has shipped, use the carrier's tracking page to redirect it to a pickup point near you." },
    Topic { id: "contact", keywords: &["human", "agent", "talk to someone", "phone", "call", "speak to", "contact"], answer: "Of course: our support team is available Monday to Saturday, 8am–8pm, by phone at 1-800-555-0199 or through this chat. Type \"agent\" and a human colleague will take over the conversation." },
    Topic { id: "hours", keywords: &["opening hours", "open on", "store hours", "weekend", "holiday"], answer: "Our online shop is open 24/7. Customer support answers Monday to Saturday from 8am to 8pm; orders placed on Sundays and holidays ship on the next business day." },
];

/// The fallback when nothing in the conversation matches a topic.
pub const UNKNOWN: &str = "Thanks for your question! I don't have a specific answer for that yet. \
Could you tell me a bit more, for example whether it is about an order, a payment or your account? \
If you prefer, a human agent can take over the conversation.";

fn score(topic: &Topic, text: &str) -> usize {
    topic
        .keywords
        .iter()
        .filter(|k| text.contains(*k))
        .map(|k| 1 + k.matches(' ').count())
        .sum()
}

/// The topic that best matches `text`, if any keyword occurs in it.
pub fn best_topic(text: &str) -> Option<&'static Topic> {
    closest(text, 1)
}

/// The best-matching topic whose score (keyword hits, multi-word keywords
/// weighing more) reaches `min_score`.
pub fn closest(text: &str, min_score: usize) -> Option<&'static Topic> {
    let text = text.to_lowercase();
    TOPICS
        .iter()
        .map(|t| (score(t, &text), t))
        .filter(|(s, _)| *s >= min_score.max(1))
        .max_by_key(|(s, _)| *s)
        .map(|(_, t)| t)
}

/// Answers the conversation: the customer's last message decides; when it names no
/// topic, the answer follows up on the most recent earlier question that did, which
/// is how a customer notices that history reached the provider.
pub fn answer(turns: &[ChatTurn]) -> String {
    let mut questions = turns.iter().rev().filter(|t| t.role == Role::User);
    let Some(last) = questions.next() else {
        return UNKNOWN.to_string();
    };
    if let Some(topic) = best_topic(&last.content) {
        return topic.answer.to_string();
    }
    for earlier in questions {
        if let Some(topic) = best_topic(&earlier.content) {
            return format!("Following up on your earlier question: {}", topic.answer);
        }
    }
    UNKNOWN.to_string()
}

/// Splits an answer into chunks the way a model emits tokens: a word with its
/// leading space.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for ch in text.chars() {
        if ch == ' ' && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        current.push(ch);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_find_their_topic() {
        assert_eq!(
            best_topic("How do I reset my password?").unwrap().id,
            "password"
        );
        assert_eq!(best_topic("Where is my order?").unwrap().id, "order-status");
        assert_eq!(best_topic("I want a refund").unwrap().id, "refund");
        assert!(best_topic("What is the meaning of life?").is_none());
    }

    #[test]
    fn a_follow_up_uses_the_history() {
        let turns = vec![
            ChatTurn::user("I forgot my password"),
            ChatTurn::assistant("…"),
            ChatTurn::user("and then what?"),
        ];
        assert!(answer(&turns).starts_with("Following up"));
        assert!(answer(&turns).contains("reset link"));
    }

    #[test]
    fn tokens_rejoin_to_the_text() {
        let text = "Refunds go back  to you.";
        assert_eq!(tokens(text).concat(), text);
        assert!(tokens(text).len() > 3);
    }
}
