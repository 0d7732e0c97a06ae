//! A small, hand-written intent-classification set (customer support messages), used by the
//! real-backbone learning tests: 4 intents × 30 messages. Tests take the first 20 of each
//! to train and keep the last 10 unseen.

pub const INTENTS: &[(&str, [&str; 30])] = &[
    (
        "billing",
        [
            "I was charged twice for the same order this month",
            "Why is there an extra fee on my invoice?",
            "Can I get a refund for the annual plan I never used?",
            "My credit card was billed even though I cancelled",
            "The price on my receipt is higher than what the website showed",
            "Please send me a copy of last month's invoice",
            "How do I change the card you charge every month?",
            "I think you overcharged me for the premium subscription",
            "When will the money for my returned item be back on my account?",
            "Is VAT included in the price you billed me?",
            "The payment failed but my bank still took the money",
            "I want to switch from monthly to yearly billing",
            "There's a charge from you that I don't recognise",
            "Do you offer a discount for students on the subscription?",
            "My coupon code was not applied at checkout",
            "Can you split the payment into instalments?",
            "I need a receipt with my company's tax number on it",
            "You renewed my plan automatically without asking",
            "How much will I pay if I upgrade halfway through the month?",
            "The refund you promised two weeks ago still hasn't arrived",
            "Why did my bill go up this month?",
            "I paid by bank transfer, did you receive it?",
            "Please cancel the pending charge on my card",
            "Can I pay with PayPal instead of a credit card?",
            "The invoice lists a product I never ordered",
            "I was promised a partial refund for the late delivery",
            "How do I download all my past invoices?",
            "My payment keeps getting declined at checkout",
            "Is there a fee for cancelling my subscription early?",
            "You charged me in dollars instead of euros",
        ],
    ),
    (
        "shipping",
        [
            "Where is my package? It was supposed to arrive yesterday",
            "The tracking number you sent me doesn't work",
            "Can you deliver to a different address than my billing one?",
            "My parcel shows as delivered but I never received it",
            "How long does shipping to Canada usually take?",
            "The box arrived crushed and the item inside is broken",
            "Do you ship internationally?",
            "Can I pick up my order from a store instead of delivery?",
            "The courier left my package with a neighbour I don't know",
            "Is express delivery available for this order?",
            "My order has been stuck in customs for a week",
            "I received someone else's parcel by mistake",
            "Can I change the delivery date to next week?",
            "The driver said nobody was home but I was there all day",
            "Why is the delivery estimate three weeks?",
            "Only half of my order arrived, where is the rest?",
            "How much does next-day shipping cost?",
            "Please hold my parcel at the post office",
            "The package was delivered to the wrong city",
            "Can I add a note for the courier about the gate code?",
            "My shipment hasn't moved since it left the warehouse",
            "Do you deliver on weekends?",
            "The parcel was left in the rain and got soaked",
            "Can I track my order without an account?",
            "The delivery company says the address is incomplete",
            "When will my backordered item be shipped?",
            "I need the package before Friday, can you speed it up?",
            "Is shipping free for orders above fifty dollars?",
            "The return label you emailed me won't print",
            "My order was marked shipped five days ago but there's no tracking update",
        ],
    ),
    (
        "technical",
        [
            "The app crashes every time I open the settings page",
            "I get an error 500 when I try to upload a photo",
            "The website is really slow and keeps timing out",
            "Notifications stopped working after the last update",
            "The export to PDF button does nothing",
            "My data didn't sync between my phone and laptop",
            "The page is blank in Safari but works in Chrome",
            "I can't connect the device to my wifi network",
            "The search returns no results even for exact names",
            "The video keeps buffering and then freezes",
            "After updating, the app won't start at all",
            "The dark mode makes some text impossible to read",
            "Your API returns a timeout error for large requests",
            "The integration with my calendar stopped syncing",
            "Images don't load on the product pages",
            "The battery drains fast since the new version",
            "The form says a field is invalid but it looks correct",
            "I keep getting logged out of the desktop app when it updates",
            "The microphone isn't detected during calls",
            "The chart on the dashboard shows wrong numbers",
            "The app freezes when I scroll through my history",
            "Uploading a large file fails at ninety percent",
            "The keyboard shortcuts don't work on Linux",
            "I see a certificate warning when I open your site",
            "The printer option is greyed out",
            "The bluetooth headset disconnects every few minutes",
            "Sorting the table by date puts the rows in random order",
            "The install fails with a missing library error",
            "The screen flickers when I open the editor",
            "Attachments over 10 MB never finish uploading",
        ],
    ),
    (
        "account",
        [
            "I forgot my password and the reset email never arrives",
            "How do I change the email address on my account?",
            "My account was locked after too many login attempts",
            "Please delete my account and all my data",
            "I can't log in with my Google account anymore",
            "Someone else may have accessed my account",
            "How do I turn on two-factor authentication?",
            "I want to change my username",
            "The verification code you text me never comes",
            "Can I merge my two accounts into one?",
            "How do I add a colleague to my team account?",
            "I lost my phone and can't get the login code",
            "Please update the phone number on my profile",
            "My account says it is suspended, why?",
            "How can I download a copy of my personal data?",
            "I never signed up but I got a welcome email",
            "The password rules won't accept my new password",
            "How do I remove a device that is logged into my account?",
            "I want to transfer ownership of the account to my manager",
            "Why was I asked to verify my identity again?",
            "The reset link says it has expired",
            "I can't see my old projects after logging in",
            "How do I leave an organisation on my account?",
            "Please unlock my account, I confirmed it's me",
            "My login email has a typo, can you fix it?",
            "I'd like to close my account permanently",
            "Security questions won't accept my answers",
            "I was signed out of all my sessions suddenly",
            "How do I change who is the admin of our workspace?",
            "The single sign-on button sends me to an error page",
        ],
    ),
];

/// CSV text of the first `n` messages of each intent.
pub fn train_csv(n: usize) -> String {
    let mut out = String::from("text,label\n");
    for (label, msgs) in INTENTS {
        for m in &msgs[..n] {
            out.push_str(&format!("\"{}\",{label}\n", m.replace('"', "\"\"")));
        }
    }
    out
}

/// The held-out messages (from index `from` on) with their labels.
pub fn held_out(from: usize) -> Vec<(&'static str, &'static str)> {
    INTENTS
        .iter()
        .flat_map(|(label, msgs)| msgs[from..].iter().map(move |m| (*m, *label)))
        .collect()
}
