"""Generate the demo dataset: support-ticket triage for Northwind Cloud, a fictional host.

Run ``python config/demo/make_support_triage.py [--out DIR]``. The output is deterministic:
the same script writes the same bytes, so the committed files can be checked against it.

Every ticket comes from an *intent* (one kind of problem, written out in a few paraphrases with
slots such as the product or the amount). The intent alone fixes the label, so the labels follow
one rule a small model can learn from about 130 examples:

- priority high: an outage, data loss, a security problem, being charged twice, or being locked
  out with a deadline;
- priority low: questions, suggestions (every feature request) and cosmetic problems;
- priority medium: everything else.

Each ticket's own wording agrees with its priority ("This is urgent.", "No rush."), as real
tickets often do; without it a 135M model learns the categories but not the priorities.

A second file holds plausible tickets with deliberate content flaws for reviewers to catch. They
are all valid chat JSONL; only their content is wrong.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SEED = 20250611
EXAMPLES_PER_CATEGORY = 34

CLEAN_FILENAME = "support_triage.jsonl"
FLAWED_FILENAME = "support_triage_flawed.jsonl"
README_FILENAME = "README.md"
CONTRACT_FILENAME = "answer_contract.json"

CATEGORIES = ("billing", "bug", "account", "feature_request")
PRIORITIES = ("low", "medium", "high")

# Deliberately short and without the priority rule: the rule is what fine-tuning should teach.
SYSTEM_PROMPT = (
    "You triage support tickets for Northwind Cloud. Reply with JSON only, with the keys "
    '"category" (one of: billing, bug, account, feature_request) and "priority" '
    "(one of: low, medium, high)."
)


@dataclass(frozen=True)
class Intent:
    """One kind of ticket. Every ticket written from it gets this category and priority."""

    key: str
    category: str
    priority: str
    subjects: tuple[str, ...]
    bodies: tuple[str, ...]


def intent(key: str, label: str, subjects: Sequence[str], bodies: Sequence[str]) -> Intent:
    category, priority = label.split("/")
    return Intent(key, category, priority, tuple(subjects), tuple(bodies))


# Slots in braces are filled from SLOT_VALUES. Typos and lower case are on purpose: real tickets.
INTENTS: tuple[Intent, ...] = (
    # billing, high: charged twice, or a charge nobody made (security)
    intent(
        "double_charge",
        "billing/high",
        ["Charged twice for {month}", "Double charge on our card"],
        [
            "We were billed twice for our {plan} plan this month: two identical charges of"
            " {amount} on the same day. Please refund the duplicate.",
            "our card got charged 2 times for {month} ({amount} each). can you reverse one of"
            " them? finance is asking me what happened",
            "Hello, you charged us twice on the same day for the {plan} subscription, {amount} and"
            " then {amount} again. One of those needs to be refunded.",
        ],
    ),
    intent(
        "invoice_paid_twice",
        "billing/high",
        ["Duplicate payment for invoice {invoice}", "Invoice {invoice} paid twice"],
        [
            "Invoice {invoice} was paid automatically and then charged again an hour later, so"
            " we paid {amount} twice. We're a small business and this overdrew our account,"
            " please refund one payment.",
            "Our bank statement shows two payments of {amount} for invoice {invoice}. Only one"
            " was expected. Can you refund the second charge?",
        ],
    ),
    intent(
        "upgrade_charged_twice",
        "billing/high",
        ["Billed twice after upgrading to {plan}", "Upgrade charged two times"],
        [
            "I upgraded to the {plan} plan yesterday and was charged the full price twice,"
            " {amount} both times. Only one charge should have gone through.",
            "After switching our workspace to {plan} we see the same {amount} charge twice on"
            " the card. Please fix this and refund the extra one.",
            "Moved our team to {plan} this morning and the bank shows two identical {amount}"
            " payments for it. Only one upgrade happened.",
        ],
    ),
    intent(
        "unauthorized_charge",
        "billing/high",
        ["Charge nobody here made", "Unauthorized charge on our account"],
        [
            "There is a {amount} charge from Northwind Cloud on our company card that nobody at"
            " {company} authorized. We think our card details were misused. Please look into it"
            " right away.",
            "We just got a receipt for {amount} that nobody on our team approved, and the card"
            " on file was changed yesterday without our knowledge. Please block any further"
            " charges.",
        ],
    ),
    intent(
        "renewal_charged_twice",
        "billing/high",
        ["Annual renewal charged twice", "Renewal went through two times"],
        [
            "Our annual {plan} renewal was charged twice this morning, {amount} each time. Please"
            " refund the duplicate as soon as possible.",
            "The yearly renewal hit our card two times within a minute. That's {amount} we did"
            " not owe, please reverse it.",
        ],
    ),
    intent(
        "fraudulent_card_charges",
        "billing/high",
        ["Fraudulent charges on our card", "Card charged without permission"],
        [
            "Five small charges from Northwind Cloud appeared on our card overnight and nobody"
            " on our team made them. We suspect fraud, please stop them now.",
            "Our bank flagged a {amount} Northwind Cloud charge as fraud. We never approved it"
            " and need it cancelled urgently.",
        ],
    ),
    # billing, medium: invoices, refunds, payment changes
    intent(
        "wrong_vat",
        "billing/medium",
        ["Wrong VAT on invoice {invoice}", "VAT charged by mistake"],
        [
            "Our invoice {invoice} includes VAT even though we entered our EU VAT number at"
            " signup. Could you reissue it without tax?",
            "We're a registered business in {eu_country} and were charged VAT on the {month}"
            " invoice. Please correct it and refund the tax part.",
        ],
    ),
    intent(
        "downgrade_credit",
        "billing/medium",
        ["Still billed at the old rate", "Credit for our downgrade"],
        [
            "We downgraded from {plan} to Starter in {month} but the last invoice still charged"
            " the old price. Can you credit the difference?",
            "we moved to a smaller plan weeks ago but got billed {amount} like before. pls"
            " adjust the invoice",
        ],
    ),
    intent(
        "card_update_fails",
        "billing/medium",
        ["Can't update payment card", "Card declined on billing page"],
        [
            "I'm trying to update our payment card on the billing page but it says 'card"
            " declined' every time. The card works everywhere else. Our renewal is in a few"
            " weeks.",
            "The billing page won't accept our new company card, it just spins and then refuses"
            " it. The old card expires next month.",
        ],
    ),
    intent(
        "invoice_details",
        "billing/medium",
        ["Invoice needs our legal name", "Please reissue invoice {invoice}"],
        [
            "Please reissue invoice {invoice} with our full legal name, {company} Ltd, and our"
            " street address. Our accountant can't book it otherwise.",
            "The invoices show my personal name instead of {company}. Could you change the"
            " billing name and resend the {month} invoice?",
        ],
    ),
    intent(
        "overage_dispute",
        "billing/medium",
        ["Overage charge looks wrong", "Bandwidth overage on the {month} invoice"],
        [
            "We were charged {amount} in bandwidth overage on {product} for {month}, but our"
            " dashboard shows we stayed under the limit. Can someone double-check the usage"
            " numbers?",
            "Our {month} bill has an overage line of {amount} that doesnt match the usage"
            " graphs at all. I'd like a breakdown and a correction if it's wrong.",
        ],
    ),
    intent(
        "cancel_subscription",
        "billing/medium",
        ["Cancel our subscription", "Cancellation and final invoice"],
        [
            "We're moving off {product} at the end of {month}. Please cancel our {plan}"
            " subscription and send the final invoice.",
            "Please stop the auto-renewal on our {plan} plan, we won't need it after this"
            " billing period. Confirm by email please.",
        ],
    ),
    intent(
        "refund_unused",
        "billing/medium",
        ["Refund request", "Partial refund request"],
        [
            "We prepaid a year of the {plan} plan, but {company} is shutting down the project"
            " after three months. We'd like a refund for the unused months.",
            "Please refund the {amount} we paid for extra storage in {month}; we removed it two"
            " days after buying it.",
        ],
    ),
    # billing, low: questions
    intent(
        "annual_discount",
        "billing/low",
        ["Question about annual billing", "Yearly pricing?"],
        [
            "Do you offer a discount if we pay for the {plan} plan yearly instead of monthly?"
            " Just comparing options for next year's budget.",
            "Quick question - is annual billing cheaper than monthly for {plan}?",
        ],
    ),
    intent(
        "find_invoices",
        "billing/low",
        ["Where do I find old invoices?", "Downloading past invoices"],
        [
            "Where can I download our invoices from last year? I looked under Settings but"
            " couldnt find them.",
            "Is there a way to get all invoices for {year} as PDFs in one go? Our accountant is"
            " asking.",
        ],
    ),
    intent(
        "storage_price",
        "billing/low",
        ["Price of extra storage", "How much for another TB?"],
        [
            "How much would an extra 1 TB on Northwind Drive cost per month on the {plan} plan?",
            "Before we upgrade: what do you charge for storage above the {plan} quota? Per GB or"
            " in blocks?",
        ],
    ),
    # bug, high: outages, data loss, security holes
    intent(
        "region_outage",
        "bug/high",
        ["{product} down in {region}", "URGENT: all requests failing"],
        [
            "All of our requests to {product} in {region} have been failing with {error} since"
            " {time}. Our customers can't reach the app at all right now.",
            "Everything in {region} is down for us, {product} returns {error} on every call. Our"
            " production site has been offline for {minutes} minutes.",
            "Our app on {product} has been unreachable in {region} since {time}, every request"
            " ends in {error}. Customers are calling us.",
        ],
    ),
    intent(
        "console_and_api_down",
        "bug/high",
        ["Outage - dashboard and API both down", "cant reach anything"],
        [
            "cant log into the dashboard and the API returns {error} for every request."
            " everything has been down for {minutes} minutes and our site is offline.",
            "Your API and the web console both stopped responding around {time}. Our whole"
            " service depends on it and it's completely down.",
            "The Northwind console shows a blank page and our API calls all fail with {error}."
            " Our service is down for every customer.",
        ],
    ),
    intent(
        "files_disappeared",
        "bug/high",
        ["Files missing after sync!!", "Folder contents gone"],
        [
            "About {count} files disappeared from our shared folder in Northwind Drive"
            " overnight. They are not in the trash either. This is client work and we need it"
            " back.",
            "After the desktop client synced this morning our whole Projects folder is empty on"
            " every device. Nobody deleted anything. We are losing work right now.",
            "Roughly {count} files in our team folder on Northwind Drive vanished after yesterday's"
            " sync. The trash is empty. Please help us recover them.",
        ],
    ),
    intent(
        "database_rows_lost",
        "bug/high",
        ["Data missing from our database", "Rows gone from production DB"],
        [
            "We restored last night's backup on Northwind Databases and the last three days of"
            " orders are gone from the tables. This is our production database, please help.",
            "Since the maintenance window on {day} our customers table on Northwind Databases"
            " is missing about {count} rows. We did not run any deletes.",
        ],
    ),
    intent(
        "other_tenant_data",
        "bug/high",
        ["I can see another company's files", "Possible data leak"],
        [
            "When I open the file browser I can see folders that belong to another company, not"
            " ours. This looks like a serious security issue.",
            "A share link we created opens someone else's documents instead of ours, including"
            " contracts from a different business. Please investigate"
            " immediately.",
        ],
    ),
    intent(
        "backups_deleted",
        "bug/high",
        ["Backups silently deleted", "Snapshots disappeared"],
        [
            "Our nightly snapshots in Northwind Backup from the last two weeks are gone and"
            " nobody changed the retention setting. Those were our only copies.",
            "All backups of our Northwind Databases instance older than yesterday vanished. We"
            " need them restored, we have no other copy of this data.",
        ],
    ),
    # bug, medium: broken but not on fire
    intent(
        "slow_uploads",
        "bug/medium",
        ["Uploads very slow from {region}", "Slow upload speeds"],
        [
            "Uploads to Northwind Drive have been really slow this week, a 200 MB file takes"
            " over ten minutes. Downloads are fine. Could you look into it?",
            "Since {day}, uploading to our storage bucket from {region} crawls along at about"
            " 1 MB/s. It used to be much faster and nothing changed on our side.",
            "Large uploads to Northwind Drive keep timing out halfway and have to start over"
            " since last week. Small files are fine.",
        ],
    ),
    intent(
        "csv_export_empty",
        "bug/medium",
        ["CSV export broken", "Usage report export is empty"],
        [
            "Exporting the usage report as CSV gives an empty file. The PDF export works, so"
            " we're using that for now.",
            "When I click Export on the usage page the downloaded CSV only has the header row."
            " Tried in {browser} and in another browser.",
            "The usage export for {month} downloads a CSV full of zeros. The numbers on screen"
            " look right.",
        ],
    ),
    intent(
        "webhook_retries",
        "bug/medium",
        ["Webhook retries not happening", "Missed webhook events"],
        [
            "Our webhook endpoint was down for a minute and the events were never retried,"
            " although the docs say you retry three times.",
            "We're missing some deployment webhooks from Northwind Compute; they show as failed"
            " in the log but there was no retry.",
        ],
    ),
    intent(
        "sync_client_crash",
        "bug/medium",
        ["Sync app crashes on startup", "Desktop client keeps crashing"],
        [
            "The desktop sync app crashes on startup on {os} since the last update. I can still"
            " use the web version in the meantime.",
            "Northwind Drive for {os} closes itself a few seconds after launch. Reinstalling"
            " didn't help.",
        ],
    ),
    intent(
        "search_misses_files",
        "bug/medium",
        ["Search doesn't find new files", "Search results incomplete"],
        [
            "Search in Northwind Drive doesn't return files uploaded in the last couple of days."
            " Older files show up fine.",
            "If I search for a document by its exact name it isnt found, even though I can see"
            " it in the folder.",
        ],
    ),
    intent(
        "alerts_delayed",
        "bug/medium",
        ["Alert emails arrive late", "Delayed notifications"],
        [
            "Usage alert emails for {product} arrive two or three hours late, so we notice"
            " problems much later than we should.",
            "The CPU alerts we set up on Northwind Compute come in hours after the threshold is"
            " crossed. The alert history shows the right times.",
        ],
    ),
    # bug, low: cosmetic
    intent(
        "dashboard_typo",
        "bug/low",
        ["Typo in dashboard", "Small spelling mistake"],
        [
            "Small thing: the storage page says 'Availble space' instead of 'Available space'.",
            "Just noticed the settings page says 'Notifcations'. Not a big deal, thought you'd"
            " want to know.",
            "The button on the team page says 'Invite memebers'. Tiny typo.",
        ],
    ),
    intent(
        "misaligned_button",
        "bug/low",
        ["Button misaligned in {browser}", "Layout glitch on the files page"],
        [
            "In {browser} the 'New bucket' button overlaps the search bar a little. Only"
            " cosmetic, everything still works.",
            "The upload button sits slightly outside its box on smaller screens in {browser}."
            " Purely visual.",
        ],
    ),
    intent(
        "dark_mode_chart",
        "bug/low",
        ["Dark mode chart colors", "Hard to read graph in dark mode"],
        [
            "In dark mode the usage chart lines are almost invisible against the background."
            " Just hard to read.",
            "The grey labels on the bandwidth graph barely show up with the dark theme. Minor"
            " visual issue.",
        ],
    ),
    # account, high: locked out with a deadline, or compromised
    intent(
        "locked_out_before_demo",
        "account/high",
        ["Locked out of my account", "Account locked - need access {deadline}"],
        [
            "My account got locked after too many login attempts and I have a client demo"
            " {deadline}. Please unlock it as fast as possible.",
            "I'm locked out of the dashboard and we go live {deadline}. The unlock email never"
            " arrives and I'm the only admin.",
            "Too many wrong passwords and now my login is blocked for 24 hours, but I'm"
            " presenting to a client {deadline}. Can you lift the lock?",
        ],
    ),
    intent(
        "lost_2fa_deadline",
        "account/high",
        ["Lost my 2FA phone", "Can't log in without authenticator"],
        [
            "I lost the phone with my authenticator app and can't log in. We have to ship a"
            " release {deadline} and I'm the only admin on the account.",
            "New phone, no 2FA codes, and no backup codes saved. I'm locked out and our"
            " migration has to finish {deadline}.",
            "My authenticator app got wiped when I reset my phone and now I can't sign in. Our"
            " release ships {deadline} and nobody else can deploy.",
        ],
    ),
    intent(
        "suspicious_login",
        "account/high",
        ["Someone logged into my account", "Login alert that wasn't me"],
        [
            "I got a login alert from {far_country} and it wasn't me. Someone also changed my"
            " recovery email. Please lock the account down.",
            "There were sign-ins to our admin account from an unknown IP overnight and a new"
            " user was added. We think the account is compromised.",
            "Someone in {far_country} logged into my account last night and changed my 2FA"
            " settings. I did not do this, please secure the account.",
        ],
    ),
    intent(
        "unknown_api_keys",
        "account/high",
        ["Keys we didn't create", "Suspicious API access"],
        [
            "Three new API keys appeared on our account that none of us created. We think our"
            " account has been compromised.",
            "Our audit log shows an access token created at {time} by a user we don't"
            " recognize. Please revoke it and help us secure the account.",
        ],
    ),
    intent(
        "admin_locked_before_payroll",
        "account/high",
        ["Admin account locked out", "Our only admin is locked out"],
        [
            "Our only admin account is locked out and we need to run the payroll exports"
            " {deadline}. The password reset email never arrives.",
            "{teammate}, our only admin, is locked out after a password reset loop, and our"
            " quarterly audit is {deadline}. Please restore access.",
        ],
    ),
    # account, medium: changes to accounts and members
    intent(
        "change_login_email",
        "account/medium",
        ["Change account email", "Update login email"],
        [
            "I need to change the email on my account to my new work address at {company}. The"
            " settings page won't let me save it.",
            "Please change the login email of our workspace owner, the old domain goes away at"
            " the end of {month}.",
            "My login email still uses our old domain. Please update it to my new address at"
            " {company}, I can confirm I own it.",
        ],
    ),
    intent(
        "transfer_ownership",
        "account/medium",
        ["Transfer organization ownership", "New owner for our org"],
        [
            "Please transfer ownership of our organization to {teammate}. Our founder is leaving"
            " {company} at the end of the month.",
            "{teammate} is taking over IT at {company}. Please make them the owner of our"
            " Northwind organization and remove me.",
            "Please make {teammate} the owner of our organization. I'm moving to another team at"
            " {company} next week.",
        ],
    ),
    intent(
        "invite_expired",
        "account/medium",
        ["Can't invite team member", "Invite link expired immediately"],
        [
            "When I invite a new teammate the invite link says 'expired' right away. Tried three"
            " times with different emails.",
            "{teammate} never received the team invitation and resending doesnt work. Can you"
            " add them manually?",
            "Invitations to our workspace bounce back with 'user not found', even for addresses"
            " that exist. We can't add anyone new.",
        ],
    ),
    intent(
        "reset_email_missing",
        "account/medium",
        ["Password reset email not arriving", "No reset email"],
        [
            "The password reset email never shows up, and I checked spam too. I'm still logged in"
            " on my laptop for now.",
            "I asked for a password reset twice today but nothing arrived. I can wait a day,"
            " just want it fixed.",
            "Password reset emails are not reaching me, I tried several times since yesterday."
            " I'm still signed in on my phone, so I can keep working.",
        ],
    ),
    intent(
        "merge_accounts",
        "account/medium",
        ["Merge two accounts", "Duplicate accounts"],
        [
            "I accidentally created two accounts with different emails. Please merge them so"
            " all my projects are in one place.",
            "I have one account from my old job and one from {company}. Please move my projects"
            " from the old one to the new one.",
            "I ended up with a personal account and a work account. Please combine them into the"
            " work one, I'd like a single login.",
        ],
    ),
    intent(
        "remove_former_employee",
        "account/medium",
        ["Remove former employee", "Ex-employee still an admin"],
        [
            "A former employee, {teammate}, is still listed as an admin and we can't remove"
            " them because they're the last owner. Please remove them from our org.",
            "{teammate} left {company} last month but still shows as an owner. We can't change"
            " their role from our side.",
            "Please remove {teammate} from our organization. They left {company} and we can't"
            " delete their admin role ourselves.",
        ],
    ),
    # account, low: questions
    intent(
        "change_display_name",
        "account/low",
        ["How to change my username", "Display name question"],
        [
            "Is it possible to change my display name? I couldn't find the option anywhere.",
            "how do i change the name that shows next to my comments? it still shows my old"
            " surname",
            "where do i edit my profile name? it shows my email address instead of my name",
        ],
    ),
    intent(
        "sso_question",
        "account/low",
        ["Question about SSO", "Single sign-on for our team?"],
        [
            "Do you support single sign-on with Google Workspace for our team? Just wondering"
            " how it works.",
            "Can our team log in with Microsoft accounts instead of separate passwords? Just"
            " exploring options.",
            "Is single sign-on with Okta available for our team? Asking before we plan anything.",
        ],
    ),
    intent(
        "close_test_account",
        "account/low",
        ["Closing an old test account", "How do I delete an unused account"],
        [
            "I have an old test account from years ago that I don't use anymore. How do I close"
            " it myself?",
            "What's the process to delete a personal account I created for testing? There's no"
            " data on it.",
            "How can I delete an old account I only used to try the product? Nothing on it"
            " matters.",
        ],
    ),
    # feature_request: always low, they are suggestions. Three paraphrases each, because this
    # category has the fewest intents and so reuses each one most often.
    intent(
        "mobile_dark_mode",
        "feature_request/low",
        ["Feature request: dark mode on mobile", "Dark theme for the app?"],
        [
            "Would love a dark mode in the Northwind mobile app. The web dashboard already has"
            " one.",
            "Any chance the iOS app gets a dark theme? I use it a lot at night.",
            "Please consider a dark mode for the Android app, the bright screen is rough in the"
            " evening.",
        ],
    ),
    intent(
        "expiring_share_links",
        "feature_request/low",
        ["Suggestion: expiring share links", "Auto-expire shared links"],
        [
            "It would be great if shared links in Northwind Drive could expire automatically"
            " after a set number of days.",
            "Could you add an expiry date option when creating share links? We always forget to"
            " revoke them.",
            "Idea: let admins set a default lifetime for all public links in the workspace.",
        ],
    ),
    intent(
        "terraform_provider",
        "feature_request/low",
        ["Terraform provider?", "Infrastructure as code support"],
        [
            "Any plans for an official Terraform provider for {product}? We manage everything"
            " else as code.",
            "It would help us a lot if you had a Pulumi or Terraform integration for {product}.",
            "We'd love to define our {product} setup in Terraform instead of clicking through"
            " the console.",
        ],
    ),
    intent(
        "chat_alerts",
        "feature_request/low",
        ["Alerts in Slack?", "Chat notifications request"],
        [
            "Could you add Slack notifications for usage alerts? Email is easy to miss for our"
            " team.",
            "Would be nice to get alerts from {product} in a Slack or Teams channel.",
            "Feature idea: post usage alerts to a webhook so we can route them to chat.",
        ],
    ),
    intent(
        "file_previews",
        "feature_request/low",
        ["Idea: previews for more file types", "Video previews in Drive"],
        [
            "It would be great if Northwind Drive could preview videos in the browser instead of"
            " downloading them first.",
            "Feature request: thumbnails for CAD and 3D files, our designers would love it.",
            "Could you add a preview for Markdown files? Right now they open as plain text.",
        ],
    ),
    intent(
        "new_region",
        "feature_request/low",
        ["Request: a new region", "More regions, please"],
        [
            "Are you planning a region in São Paulo? Our customers there would love lower latency.",
            "Please add a South American region, most of our users are in Brazil and Chile.",
            "We'd move more workloads to {product} if you had a region in Johannesburg.",
        ],
    ),
    intent(
        "zip_download",
        "feature_request/low",
        ["Request: download folder as zip", "Bulk download"],
        [
            "pls add a way to download a whole folder as a zip, right now we download files one"
            " by one",
            "It would save us a lot of time to select many files in Northwind Drive and"
            " download them together.",
            "Feature request: a 'Download all' button for shared folders, so clients don't have"
            " to click every file.",
        ],
    ),
    intent(
        "audit_log_export",
        "feature_request/low",
        ["Audit log export", "Suggestion: stream audit logs"],
        [
            "Suggestion: let us export the audit log to our own storage bucket. Our compliance"
            " team would appreciate it.",
            "Could the audit log be sent to a SIEM like Splunk? Would make our yearly review"
            " easier.",
            "Would love an API endpoint for the audit log so we can pull it into our own"
            " reporting every night.",
        ],
    ),
    intent(
        "keyboard_shortcuts",
        "feature_request/low",
        ["Keyboard shortcuts in file browser", "Shortcut suggestions"],
        [
            "It'd be nice to have keyboard shortcuts in the file browser, like Delete to trash"
            " and F2 to rename.",
            "Any plans for keyboard navigation in the dashboard? I'd use j/k to move through"
            " lists.",
            "Suggestion: a shortcut to jump straight to search, like the / key on other sites.",
        ],
    ),
    intent(
        "command_line_tool",
        "feature_request/low",
        ["Command line tool?", "Request: a CLI for Drive"],
        [
            "Would love a command line tool for Northwind Drive so we can script our nightly"
            " uploads.",
            "Any plans for an official CLI? Clicking through the console for every new server"
            " gets old.",
            "Suggestion: a small CLI that can sync a local folder to a bucket, like rsync.",
        ],
    ),
    intent(
        "longer_version_history",
        "feature_request/low",
        ["Longer version history", "Request: more control over file versions"],
        [
            "We'd like to keep file version history for 90 days on Northwind Drive. Could that"
            " be an option?",
            "Please consider letting Business customers choose a longer version history than 30"
            " days.",
            "Feature request: let us pin important file versions so they are never pruned.",
        ],
    ),
    intent(
        "team_management_api",
        "feature_request/low",
        ["API for team management", "Automate user onboarding"],
        [
            "Would be great to have API endpoints to add and remove team members, so we can"
            " automate onboarding.",
            "Could you expose user management in the API? We add people by hand every time"
            " someone joins {company}.",
            "Feature idea: SCIM provisioning so our HR system creates and removes Northwind"
            " users for us.",
        ],
    ),
    intent(
        "scheduled_shutdown",
        "feature_request/low",
        ["Automatic server shutdown", "Idea: scheduled shutdown"],
        [
            "It would be nice to schedule our Northwind Compute test servers to stop every night"
            " and start again in the morning.",
            "Feature idea: an on/off schedule for development VMs so they don't run all weekend.",
            "Please add a way to stop Compute servers automatically when CPU stays idle for a"
            " few hours.",
        ],
    ),
)

SLOT_VALUES: dict[str, tuple[str, ...]] = {
    "product": (
        "Northwind Compute",
        "Northwind Databases",
        "Northwind CDN",
        "Northwind Drive",
        "Northwind Functions",
    ),
    "plan": ("Team", "Business", "Pro"),
    "amount": (
        "$49.00",
        "$129.00",
        "$480.00",
        "$89.50",
        "$1,240.00",
        "$312.75",
        "€99.00",
        "£64.00",
        "$2,016.00",
        "$18.00",
    ),
    "region": ("Frankfurt", "Virginia", "Singapore", "Oregon", "London", "Sydney", "Toronto"),
    "error": (
        "502 Bad Gateway",
        "HTTP 500",
        "503 Service Unavailable",
        "a connection timeout",
        "error NW-5013",
        "504 Gateway Timeout",
    ),
    "deadline": (
        "tomorrow morning",
        "in two hours",
        "this afternoon",
        "at 9am tomorrow",
        "tonight",
        "on Friday morning",
        "in 45 minutes",
    ),
    "month": ("January", "March", "April", "June", "August", "September", "October", "November"),
    "count": ("40", "120", "300", "850", "1,200", "2,500", "6,000"),
    "browser": ("Chrome", "Firefox", "Safari", "Edge"),
    "os": ("Windows 11", "macOS Sonoma", "Ubuntu 22.04", "Windows 10", "macOS Ventura"),
    "eu_country": ("Germany", "Spain", "the Netherlands", "Ireland", "Poland", "France", "Italy"),
    "far_country": ("Brazil", "Vietnam", "Romania", "Canada", "Indonesia", "Portugal"),
    "time": ("9:40 UTC", "14:05", "6am", "noon", "3pm", "02:30 UTC"),
    "minutes": ("15", "20", "25", "40", "90"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "the weekend"),
    "year": ("2022", "2023", "2024"),
    "company": (
        "Brightline Dental",
        "Kestrel Logistics",
        "Oakfield Studio",
        "Pinecrest Legal",
        "Bluefin Analytics",
        "Harbor & Finch",
        "Lumen Bakery",
        "Redwood Tutoring",
        "Vega Robotics",
        "Copperleaf Travel",
        "Quartz Media",
        "Moss & Stone Architects",
        "Tidewater Clinics",
        "Saffron Foods",
        "Ironbark Fitness",
    ),
}

PEOPLE = (
    "Maria",
    "Tom",
    "Priya",
    "Kenji",
    "Ahmed",
    "Sofia",
    "Lukas",
    "Chloé",
    "Diego",
    "Aisha",
    "Ben",
    "Olga",
    "Rahul",
    "Emma",
    "Jonas",
    "Fatima",
    "Marco",
    "Hannah",
    "Wei",
    "Grace",
    "Samuel",
    "Ingrid",
    "Tariq",
    "Nina",
    "Oluwaseun",
    "Paul",
    "Yuki",
    "Sean",
)

# How customers word their urgency. Every ticket ends its body with one note that agrees with its
# priority: the content rule alone is too subtle for a 135M model to learn from ~130 examples
# (measured: it learned the categories but guessed the priorities), and real customers do say so.
PRIORITY_NOTES: dict[str, tuple[str, ...]] = {
    "high": (
        "This is urgent.",
        "Please help asap!",
        "We need this fixed right now.",
        "Please treat this as urgent.",
        "Urgent, please escalate.",
    ),
    "medium": (
        "Thanks for looking into it.",
        "Let me know if you need more details.",
        "Please let us know what you find.",
        "Thanks in advance.",
    ),
    "low": ("No rush.", "Just curious.", "Not urgent at all.", "Whenever you have time."),
}

# Empty entries repeat on purpose: many real tickets skip the greeting or the sign-off.
GREETINGS = ("", "", "", "", "Hi,\n\n", "Hello,\n\n", "Hi Northwind team,\n\n", "Hey,\n\n")
SIGN_OFFS = (
    "",
    "",
    "",
    "",
    "\n\nThanks,\n{name}",
    "\n\n- {name}",
    "\n\n{name}\n{company}",
    "\n\nBest regards,\n{name} ({company})",
    "\n\nthanks",
    "\n\nCheers, {name}",
)


def answer(category: str, priority: str) -> str:
    """The exact assistant reply the model should learn: compact JSON, keys in this order."""
    return json.dumps({"category": category, "priority": priority})


def conversation(ticket: str, reply: str) -> dict[str, list[dict[str, str]]]:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": ticket},
            {"role": "assistant", "content": reply},
        ]
    }


def with_note(body: str, note: str) -> str:
    # Bodies written without a final full stop (hurried, lower-case ones) still get one here.
    separator = " " if body.endswith((".", "?", "!")) else ". "
    return f"{body}{separator}{note}"


class TicketWriter:
    """Writes tickets from intents, never the same text twice."""

    # Enough draws to find an unused combination of slots for any intent here.
    MAX_ATTEMPTS = 200

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.written: set[str] = set()

    def write(self, source: Intent, paraphrase: int) -> str:
        """A new ticket from ``source`` using body number ``paraphrase`` (wrapping around)."""
        body = source.bodies[paraphrase % len(source.bodies)]
        for _ in range(self.MAX_ATTEMPTS):
            ticket = self._compose(source, body)
            if ticket not in self.written:
                self.written.add(ticket)
                return ticket
        raise RuntimeError(f"could not write a new ticket for intent {source.key!r}")

    def _compose(self, source: Intent, body: str) -> str:
        slots = self._draw_slots()
        subject = self.rng.choice(source.subjects)
        greeting = self.rng.choice(GREETINGS)
        note = self.rng.choice(PRIORITY_NOTES[source.priority])
        sign_off = self.rng.choice(SIGN_OFFS)
        text = f"Subject: {subject}\n\n{greeting}{with_note(body, note)}{sign_off}"
        return text.format(**slots)

    def _draw_slots(self) -> dict[str, str]:
        slots = {name: self.rng.choice(values) for name, values in SLOT_VALUES.items()}
        # Two different people: the writer and the colleague they mention.
        slots["name"], slots["teammate"] = self.rng.sample(PEOPLE, 2)
        slots["invoice"] = f"INV-{self.rng.randint(20000, 99999)}"
        return slots


def build_clean(rng: random.Random) -> list[dict[str, list[dict[str, str]]]]:
    """The same number of tickets per category, spread evenly over that category's intents."""
    writer = TicketWriter(rng)
    records = []
    for category in CATEGORIES:
        intents = [item for item in INTENTS if item.category == category]
        rng.shuffle(intents)
        # Intents with more paraphrases go first and so take the extra uses: an intent used more
        # often than it has paraphrases would repeat a body, a near-duplicate in the clean file.
        intents.sort(key=lambda item: -len(item.bodies))
        for position in range(EXAMPLES_PER_CATEGORY):
            source = intents[position % len(intents)]
            # The n-th use of an intent takes its n-th paraphrase, so repeats differ in wording.
            ticket = writer.write(source, paraphrase=position // len(intents))
            records.append(conversation(ticket, answer(source.category, source.priority)))
    # Interleave categories so that any split or preview sees all of them.
    rng.shuffle(records)
    return records


@dataclass(frozen=True)
class Flaw:
    """A plausible example that a reviewer should reject, and why (``description``).

    The tickets are written by hand, not from the intents, so that none of them resembles a
    clean example: only the near-duplicates below should.
    """

    description: str
    ticket: str
    reply: str


FLAWS = (
    Flaw(
        "wrong category",
        "Subject: Two charges for the same invoice\n\nHi,\n\nOur card statement shows Northwind"
        " Cloud charged us $89.50 on the 3rd and again on the 4th for the same invoice. Please"
        " refund the second one.\n\nThanks,\nAmara",
        answer("feature_request", "high"),
    ),
    Flaw(
        "wrong category",
        "Subject: Sync stuck at 99%\n\nThe Northwind Drive client on my Mac has been stuck at"
        " 'Syncing 1 file' for two days. Restarting it didn't help.",
        answer("account", "medium"),
    ),
    Flaw(
        "wrong priority",
        "Subject: Site down - Northwind CDN\n\nOur website behind Northwind CDN has returned"
        " 503 errors to every visitor since 10:15 UTC. We're losing sales every minute.\n\n"
        "- Jorge",
        answer("bug", "low"),
    ),
    Flaw(
        "wrong priority",
        "Subject: Logo blurry on login page\n\nThe Northwind logo on the login page looks"
        " blurry on my 4K monitor. Purely cosmetic.",
        answer("bug", "high"),
    ),
    Flaw(
        "answer is not valid JSON",
        "Subject: Nonprofit discount?\n\nHello, we're a small charity. Do you offer reduced"
        " prices for nonprofits on the Team plan?",
        # Python's repr of a dict, as a careless export script would write it.
        "{'category': 'billing', 'priority': 'low'}",
    ),
    Flaw(
        "prose around the JSON",
        "Subject: Unknown device signed in\n\nI got an email that a new Linux device signed into"
        " my account at 3am. That wasn't me, and now my password doesn't work.\n\nMaria",
        "Sure! Here is the triage for this ticket:\n" + answer("account", "high"),
    ),
    Flaw(
        'misspelled key "categroy"',
        "Subject: Graphs not loading\n\nThe bandwidth graphs on the usage page stay blank since"
        " yesterday, in both Chrome and Firefox. The table of numbers below them still loads.",
        json.dumps({"categroy": "bug", "priority": "medium"}),
    ),
    Flaw(
        "answer in Spanish",
        "Subject: Invoice address wrong\n\nThe address on our last two invoices is our old"
        " office. Please update it to Calle Mayor 12, Madrid, and resend them.",
        json.dumps({"categoría": "facturación", "prioridad": "media"}, ensure_ascii=False),
    ),
    Flaw(
        'priority outside the allowed values ("urgent")',
        "Subject: All VMs unreachable\n\nNone of our Northwind Compute servers in Sydney have"
        " answered ping or SSH for 20 minutes. Our whole platform is down.",
        json.dumps({"category": "bug", "priority": "urgent"}),
    ),
    Flaw(
        'empty answer "{}"',
        "Subject: Feature idea: folder colors\n\nIt would be nice to give folders colors in"
        " Northwind Drive so we can spot the important ones quickly.",
        "{}",
    ),
    # Correctly labelled, but holding a customer secret that must never reach training data.
    # The card number is a well-known test number and the password is made up.
    Flaw(
        "card number in the ticket",
        "Subject: Update card on file\n\nPlease switch our payment card to 4111 1111 1111 1111,"
        " expiry 08/27, CVC 123. The old one expired and the renewal failed.\n\nThanks,\nDiego",
        answer("billing", "medium"),
    ),
    Flaw(
        "password in the ticket",
        "Subject: cant log in\n\nMy login is olga.p@kestrel-logistics.example and my password is"
        " Tulip-Garden-2024! but it keeps saying invalid credentials. Can you check whats"
        " wrong?",
        answer("account", "medium"),
    ),
)

NEAR_DUPLICATE_DESCRIPTION = "near-duplicate of a clean example"
NEAR_DUPLICATE_COUNT = 2
# Long tickets stay close to their copy after a small edit; short ones would drift too far.
NEAR_DUPLICATE_SOURCE_POOL = 30


def near_duplicate(ticket: str, variant: int) -> str:
    """A copy an import could plausibly produce: resent from a phone, or its subject lowercased."""
    if variant % 2 == 0:
        return f"{ticket}\n\nSent from my phone"
    subject_line, rest = ticket.split("\n\n", 1)
    return f"{subject_line.lower()}\n\n{rest}"


def build_flawed(
    rng: random.Random, clean: Sequence[dict[str, list[dict[str, str]]]]
) -> list[dict[str, list[dict[str, str]]]]:
    records = [conversation(flaw.ticket, flaw.reply) for flaw in FLAWS]
    longest_first = sorted(clean, key=lambda record: -len(record["messages"][1]["content"]))
    sources = rng.sample(longest_first[:NEAR_DUPLICATE_SOURCE_POOL], NEAR_DUPLICATE_COUNT)
    for variant, source in enumerate(sources):
        ticket, reply = source["messages"][1]["content"], source["messages"][2]["content"]
        records.append(conversation(near_duplicate(ticket, variant), reply))
    # Mixed order, so a reviewer has to read every example rather than skip to the end.
    rng.shuffle(records)
    return records


def flaw_descriptions() -> list[str]:
    """Each kind of flaw once, with its count when there is more than one, for the README."""
    descriptions = [flaw.description for flaw in FLAWS]
    descriptions += [NEAR_DUPLICATE_DESCRIPTION] * NEAR_DUPLICATE_COUNT
    unique = list(dict.fromkeys(descriptions))
    return [
        f"{kind} (x{descriptions.count(kind)})" if descriptions.count(kind) > 1 else kind
        for kind in unique
    ]


def readme(clean_count: int, flawed_count: int) -> str:
    flaws = "; ".join(flaw_descriptions())
    lines = [
        "# Demo task: support-ticket triage for Northwind Cloud (a fictional hosting company)",
        "",
        f"- Generated by `make_support_triage.py` (seed {SEED}); rerunning it rewrites identical"
        " files.",
        "- Each example: a fixed system instruction, a customer ticket, and the answer as compact"
        ' JSON: `{"category": "billing", "priority": "high"}`.',
        f"- Categories: {', '.join(CATEGORIES)}.",
        "- Priority rule: high = outage, data loss, security problem, charged twice, or locked out"
        " before a deadline; low = questions, suggestions (every feature request) and cosmetic"
        ' issues; medium = everything else. Each ticket\'s wording agrees ("This is urgent.",'
        ' "No rush.").',
        f"- `{CLEAN_FILENAME}`: {clean_count} clean examples,"
        f" {EXAMPLES_PER_CATEGORY} per category.",
        f"- `{FLAWED_FILENAME}`: {flawed_count} valid-looking examples a reviewer should catch:"
        f" {flaws}.",
        f"- `{CONTRACT_FILENAME}`: the answer contract (a JSON Schema with the category and"
        " priority enums) that the demo loader declares on the dataset.",
    ]
    return "\n".join(lines) + "\n"


def answer_contract() -> dict[str, object]:
    """The dataset's answer contract: a JSON object with exactly the two keys, each one of its
    allowed values (the shape of ``datasets.contracts``, which the demo loader declares)."""
    return {
        "kind": "json_schema",
        "schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "category": {"enum": list(CATEGORIES)},
                "priority": {"enum": list(PRIORITIES)},
            },
            "required": ["category", "priority"],
            "additionalProperties": False,
        },
    }


def to_jsonl(records: Sequence[dict[str, list[dict[str, str]]]]) -> bytes:
    lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in records]
    return "".join(lines).encode("utf-8")


def generate(out_dir: Path) -> list[Path]:
    """Write the demo files into ``out_dir`` and return their paths."""
    rng = random.Random(SEED)
    clean = build_clean(rng)
    flawed = build_flawed(rng, clean)
    out_dir.mkdir(parents=True, exist_ok=True)
    contents = {
        CLEAN_FILENAME: to_jsonl(clean),
        FLAWED_FILENAME: to_jsonl(flawed),
        README_FILENAME: readme(len(clean), len(flawed)).encode("utf-8"),
        CONTRACT_FILENAME: (json.dumps(answer_contract(), indent=2) + "\n").encode("utf-8"),
    }
    paths = []
    for filename, data in contents.items():
        path = out_dir / filename
        # Bytes, not text mode, so no platform ever rewrites the line endings.
        path.write_bytes(data)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="folder to write into (default: next to this script)",
    )
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
