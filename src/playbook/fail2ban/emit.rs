//! The playbook file of an imported filter, in the city's style: the title
//! `fail2ban <filter> ({ip})`, severity low (fail2ban's filters see the Internet's daily noise;
//! raise it by hand for what matters), the jail's threshold, and first-response steps a
//! responder can follow at night. Strings are written by the `toml` crate, so no pattern can
//! break out of its quotes.

use super::RuleDraft;
use crate::duration::Span;
use std::fmt::Write as _;

/// What a playbook file is made from.
#[derive(Debug, Clone)]
pub struct Playbook {
    pub filter: String,
    /// The filter file, for the header.
    pub source: String,
    pub id: String,
    pub mode: Option<String>,
    pub category: &'static str,
    pub maxretry: u32,
    pub findtime: Span,
    pub strip: Option<String>,
    pub ignore: Vec<String>,
    /// The logs the rules read (their `files`).
    pub logs: super::Logs,
    pub rules: Vec<RuleDraft>,
}

/// The first line of every imported playbook: `csirt playbooks import` overwrites only files
/// that start with it.
pub const HEADER: &str = "# csirt playbooks import fail2ban:";

/// A category in the city's set for a filter, from what the filter watches.
pub fn category(filter: &str, mode: Option<&str>) -> &'static str {
    const WEB_ATTACK: &[&str] = &[
        "botsearch",
        "badbots",
        "noscript",
        "overflows",
        "shellshock",
        "bad-request",
        "fakegooglebot",
        "nohome",
        "url-fopen",
        "modsecurity",
        "suhosin",
    ];
    if filter.contains("limit-req") || mode.is_some_and(|m| m == "ddos") {
        "DoS/DDoS"
    } else if WEB_ATTACK.iter().any(|w| filter.contains(w)) {
        "Webサーバへの攻撃"
    } else {
        "不正アクセス"
    }
}

/// A TOML string (basic or literal, whichever the `toml` crate picks for the text).
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// The playbook file's text.
pub fn render(p: &Playbook) -> String {
    let mode = p.mode.as_deref().unwrap_or("normal");
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{HEADER} {} (mode {mode})\n#\n# fail2ban の {} フィルタを取り込んだプレイブック。元のフィルタを変えたら、取り込み直してください\n# (csirt playbooks import fail2ban {} --out …)。手で直したら、この 1 行目を消すと上書きされません。\n# 各 [[rule]] は fail2ban の failregex 1 行 (prefregex と組み合わせ済み)。strip は fail2ban と同じく\n# 行の時刻を切り取る部分、engine = \"backtrack\" は先読み・後方参照のために後戻りの上限つきで\n# 照合する規則です (playbooks/README.md「fail2ban のフィルタを取り込む」)。",
        p.source, p.filter, p.source
    );
    match &p.logs {
        super::Logs::Every { why } => {
            let _ = writeln!(
                s,
                "#\n# files が無いので、設定の [[logs]] のすべてのファイルを読みます ({why})。jail の logpath を\n# 読ませるには --jail を付けて取り込み直すか、各 [[rule]] に files = [\"auth.log*\"] などを書いてください。"
            );
        }
        super::Logs::Files { logpath, .. } => {
            let _ = writeln!(
                s,
                "#\n# files は jail の logpath ({}) のファイル名です。",
                logpath.join(", ")
            );
        }
        super::Logs::Journal { source, matches } => {
            let _ = writeln!(
                s,
                "#\n# jail は systemd のジャーナルを読みます (backend = systemd)。設定 (csirt.toml) に次を書いてください:\n#   [[journal]]\n#   name = {}\n#   matches = [{}]",
                quoted(source),
                matches
                    .iter()
                    .map(|m| quoted(m))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let _ = writeln!(s, "id = {}", quoted(&p.id));
    let _ = writeln!(
        s,
        "title = {}",
        quoted(&format!("fail2ban {} ({{ip}})", p.filter))
    );
    let _ = writeln!(s, "category = {}", quoted(p.category));
    let _ = writeln!(s, "severity = \"low\"");
    let _ = writeln!(
        s,
        "description = {}",
        quoted(&format!(
            "fail2ban の {} フィルタ (モード {mode}) が失敗とみなす行が、同じ送信元から {} 以内に {} 回以上あった。",
            p.filter, p.findtime, p.maxretry
        ))
    );
    let _ = writeln!(s, "dedupe = [\"ip\"]");
    if !p.ignore.is_empty() {
        let list: Vec<String> = p.ignore.iter().map(|i| quoted(i)).collect();
        let _ = writeln!(s, "ignore = [{}]", list.join(", "));
    }
    for rule in &p.rules {
        let _ = writeln!(s, "\n[[rule]]");
        let _ = writeln!(s, "name = \"failregex-{}\"", rule.index);
        let _ = writeln!(s, "source = \"log\"");
        let files = p.logs.files();
        if !files.is_empty() {
            let list: Vec<String> = files.iter().map(|f| quoted(f)).collect();
            let _ = writeln!(s, "files = [{}]", list.join(", "));
        }
        if let Some(strip) = &p.strip {
            let _ = writeln!(s, "strip = {}", quoted(strip));
        }
        if rule.backtrack {
            let _ = writeln!(s, "engine = \"backtrack\"");
        }
        let _ = writeln!(s, "pattern = {}", quoted(&rule.pattern));
        if !rule.anchored {
            let _ = writeln!(s, "anchored = false");
            let _ = writeln!(
                s,
                "note = {}",
                quoted(
                    "fail2ban のフィルタのとおり、行のどこからでも照合する (相手が書ける部分からアドレスを取る恐れがある)"
                )
            );
        }
        let _ = writeln!(s, "[rule.threshold]");
        let _ = writeln!(s, "count = {}", p.maxretry);
        let _ = writeln!(s, "window = \"{}\"", p.findtime);
    }
    let steps = [
        format!(
            "csirt incidents show 番号 で送信元アドレス、回数、一致した行 (fail2ban の {} フィルタ) を確認する",
            p.filter
        ),
        "サービスのログで同じ送信元の行を確認し、成功したログインや操作が無いか見る: sudo grep -rF -- {ip} /var/log/ | tail -50 (ジャーナルなら sudo journalctl --since -1d | grep -F -- {ip})".to_string(),
        "成功が無ければ送信元をファイアウォールで遮断する: sudo nft add element inet filter blocklist '{ {ip} }'".to_string(),
        "遮断した時刻とコマンドを記録する: csirt incidents note 番号 'nft で遮断'。成功していた場合は当該アカウントを止め、情報政策推進室長に電話で報告する".to_string(),
    ];
    for step in steps {
        let _ = writeln!(s, "\n[[step]]\ntext = {}", quoted(&step));
    }
    s
}
