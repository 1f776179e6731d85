//! The labelled set of support-question pairs: paraphrases that should share a
//! cached answer and near misses that must not. Judged by `tests/cache_quality.rs`;
//! `benches/cache.rs` asks its paraphrases concurrently.

/// (cached question, asked question): the same need in other words.
pub const SHOULD_HIT: &[(&str, &str)] = &[
    (
        "How do I reset my password?",
        "I forgot my password, how can I change it?",
    ),
    (
        "How do I reset my password?",
        "How can I reset my password?",
    ),
    ("Where is my order?", "Where's my order?"),
    ("Where is my order?", "Where is my order right now?"),
    ("How long does a refund take?", "How long do refunds take?"),
    (
        "How long does a refund take?",
        "How many days does it take to get a refund?",
    ),
    ("How much is shipping?", "How much does shipping cost?"),
    ("How much is shipping?", "What is the shipping cost?"),
    ("Do you ship internationally?", "Do you ship abroad?"),
    (
        "Do you ship internationally?",
        "Can you ship to other countries?",
    ),
    (
        "Which payment methods do you accept?",
        "What payment methods do you accept?",
    ),
    (
        "Which payment methods do you accept?",
        "What payment options are available?",
    ),
    ("How do I return an item?", "How can I return an item?"),
    (
        "How do I return an item?",
        "What is the process to return an item?",
    ),
    ("Can I talk to a human?", "Can I speak to a human?"),
    ("Can I talk to a human?", "I want to talk to a real person"),
    (
        "How do I change my email address?",
        "How can I update my email address?",
    ),
    (
        "How do I delete my account?",
        "How can I delete my account?",
    ),
    ("My package arrived damaged", "My package arrived broken"),
    (
        "What are your opening hours?",
        "What are your support hours?",
    ),
    (
        "How do I use a discount code?",
        "How do I apply a discount code?",
    ),
    ("Do gift cards expire?", "Does a gift card expire?"),
    ("How do I cancel my order?", "How can I cancel my order?"),
    (
        "Can I pause my membership?",
        "Is it possible to pause my membership?",
    ),
    (
        "I was charged twice",
        "I was charged twice for one purchase",
    ),
    ("How do I track my package?", "How can I track my package?"),
    ("Is the warranty included?", "Does it come with a warranty?"),
    (
        "When will the jacket be back in stock?",
        "When is the jacket back in stock?",
    ),
    (
        "Can I change my delivery address?",
        "How do I change my delivery address?",
    ),
    (
        "How do I unsubscribe from the newsletter?",
        "How can I unsubscribe from your newsletter?",
    ),
];

/// (cached question, asked question): close in wording, different in meaning.
pub const MUST_NOT_HIT: &[(&str, &str)] = &[
    (
        "How do I cancel my order?",
        "How do I cancel my subscription?",
    ),
    (
        "How do I cancel my order?",
        "How do I cancel my membership?",
    ),
    (
        "How do I enable notifications?",
        "How do I disable notifications?",
    ),
    (
        "How do I add a payment method?",
        "How do I remove a payment method?",
    ),
    (
        "Can I return an item after 30 days?",
        "Can I return an item after 60 days?",
    ),
    ("My package arrived", "My package has not arrived"),
    ("I can log in", "I can't log in"),
    ("Is shipping free?", "Is shipping not free?"),
    ("Can you deliver on Monday?", "Can you deliver on Friday?"),
    ("Can I pause my membership?", "Can I cancel my membership?"),
    ("How do I upgrade my plan?", "How do I downgrade my plan?"),
    ("How do I lock my account?", "How do I unlock my account?"),
    (
        "How do I subscribe to the newsletter?",
        "How do I unsubscribe from the newsletter?",
    ),
    ("How do I change my password?", "How do I change my email?"),
    (
        "How do I update my address?",
        "How do I update my payment card?",
    ),
    ("Where is my refund?", "Where is my order?"),
    ("Can I exchange an item?", "Can I return an item?"),
    ("I want to buy 2 jackets", "I want to buy 3 jackets"),
    ("Do you deliver today?", "Do you deliver tomorrow?"),
    (
        "What happens before my subscription renews?",
        "What happens after my subscription renews?",
    ),
    (
        "How do I start my membership?",
        "How do I stop my membership?",
    ),
    (
        "Can I open a second account?",
        "Can I close my second account?",
    ),
    ("I was charged twice", "I was not charged"),
    ("Where is order 48213?", "Where is order 48231?"),
    (
        "Is the store open on Sunday?",
        "Is the store open on Saturday?",
    ),
    (
        "Can I increase my credit limit?",
        "Can I decrease my credit limit?",
    ),
    (
        "How do I activate my gift card?",
        "How do I deactivate my gift card?",
    ),
    (
        "Do I get a discount on my first order?",
        "Do I get a discount on my last order?",
    ),
    ("Can I return a gift?", "Can I buy a gift?"),
    ("My invoice is wrong", "My order is wrong"),
];
