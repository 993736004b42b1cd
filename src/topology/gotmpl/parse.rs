//! Parsing the subset of Go's `text/template` that ClusterClass patches and
//! naming templates use: text and actions (with `{{-`/`-}}` trimming),
//! pipelines, fields, variables, literals, parenthesised pipelines,
//! `if`/`else if`/`else`, `range`, `with`, variable declarations and
//! comments. Unknown functions are parse errors, as in Go. Blocks and
//! parentheses nest at most `MAX_TEMPLATE_NESTING` levels (`budget.rs`), so
//! neither the parser nor the evaluator recurses without bound.

use super::{budget, funcs, TemplateError};

/// A parsed template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub(super) nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
pub(super) enum Node {
    Text(String),
    Action(Pipe),
    If {
        branches: Vec<(Pipe, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Range {
        pipe: Pipe,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        pipe: Pipe,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

/// `$a, $b := cmd | cmd`.
#[derive(Debug, Clone)]
pub(super) struct Pipe {
    pub(super) decl: Vec<String>,
    pub(super) assign: bool,
    pub(super) cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
pub(super) enum Arg {
    /// `.a.b` (empty: `.`).
    Field(Vec<String>),
    /// `$x.a.b` (`$` alone is the root).
    Var(String, Vec<String>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Func(String),
    /// `(pipeline).a.b`
    Sub(Box<Pipe>, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    Num(String),
    Ident(String),
    Open,
    Close(Vec<String>),
    Bar,
    Declare,
    Assign,
    Comma,
}

/// Parse a template.
pub(crate) fn parse(src: &str) -> Result<Template, TemplateError> {
    let items = split_actions(src)?;
    let mut p = Parser {
        items,
        at: 0,
        pending_else_if: None,
        depth: 0,
    };
    let (nodes, end) = p.top()?;
    if let Some(end) = end {
        return Err(TemplateError::Parse(format!("unexpected {{{{{end}}}}}")));
    }
    Ok(Template { nodes })
}

enum Item {
    Text(String),
    Action(Vec<Tok>),
}

/// Cut the source into text and tokenised actions, applying trim markers.
fn split_actions(src: &str) -> Result<Vec<Item>, TemplateError> {
    let mut items = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            let text = if trim_next { rest.trim_start() } else { rest };
            items.push(Item::Text(text.to_string()));
            break;
        };
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        let mut inner = &rest[open + 2..];
        if inner.starts_with("- ") || inner.starts_with("-\t") || inner.starts_with("-\n") {
            text = text.trim_end();
            inner = &inner[1..];
        }
        if !text.is_empty() {
            items.push(Item::Text(text.to_string()));
        }
        let close = find_close(inner)
            .ok_or_else(|| TemplateError::Parse("unclosed action: missing }}".into()))?;
        let mut body = &inner[..close];
        trim_next = false;
        if body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-") {
            body = &body[..body.len() - 1];
            trim_next = true;
        }
        rest = &inner[close + 2..];
        let trimmed = body.trim();
        if trimmed.starts_with("/*") {
            if !trimmed.ends_with("*/") {
                return Err(TemplateError::Parse("unclosed comment".into()));
            }
            continue;
        }
        items.push(Item::Action(lex(body)?));
    }
    Ok(items)
}

/// The `}}` closing an action, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn lex(body: &str) -> Result<Vec<Tok>, TemplateError> {
    let chars: Vec<char> = body.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let word = |i: &mut usize| -> String {
        let start = *i;
        while *i < chars.len() && is_ident(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect()
    };
    let fields = |i: &mut usize| -> Vec<String> {
        let mut f = Vec::new();
        while *i < chars.len() && chars[*i] == '.' {
            *i += 1;
            let start = *i;
            while *i < chars.len() && is_ident(chars[*i]) {
                *i += 1;
            }
            let w: String = chars[start..*i].iter().collect();
            if !w.is_empty() {
                f.push(w);
            }
        }
        f
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '.' => {
                if chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
                    return Err(TemplateError::Parse(format!("bad number in {body:?}")));
                }
                out.push(Tok::Field(fields(&mut i)));
            }
            '$' => {
                i += 1;
                let name = format!("${}", word(&mut i));
                out.push(Tok::Var(name, fields(&mut i)));
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err(TemplateError::Parse("unterminated quoted string".into()));
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let e = chars.get(i).copied().unwrap_or('\\');
                            i += 1;
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                other => other,
                            });
                        }
                        c => s.push(c),
                    }
                }
                out.push(Tok::Str(s));
            }
            '`' => {
                let start = i + 1;
                let end = chars[start..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or_else(|| TemplateError::Parse("unterminated raw string".into()))?;
                out.push(Tok::Str(chars[start..start + end].iter().collect()));
                i = start + end + 1;
            }
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                i += 1;
                out.push(Tok::Close(fields(&mut i)));
            }
            '|' => {
                out.push(Tok::Bar);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                out.push(Tok::Assign);
                i += 1;
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                let start = i;
                i += 1;
                while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
                out.push(Tok::Num(chars[start..i].iter().collect()));
            }
            c if is_ident(c) => out.push(Tok::Ident(word(&mut i))),
            other => {
                return Err(TemplateError::Parse(format!(
                    "unexpected {other:?} in action {{{{{body}}}}}"
                )))
            }
        }
    }
    Ok(out)
}

struct Parser {
    items: Vec<Item>,
    at: usize,
    /// The condition of an `{{else if}}`, from `block` to `if_node`.
    pending_else_if: Option<Pipe>,
    /// Blocks open around the one being read.
    depth: usize,
}

impl Parser {
    /// The template's top level.
    fn top(&mut self) -> Result<(Vec<Node>, Option<String>), TemplateError> {
        self.nodes()
    }

    /// The body of a block (`if`, `range`, `with`, one level deeper) up to
    /// its `end`/`else`.
    fn block(&mut self) -> Result<(Vec<Node>, Option<String>), TemplateError> {
        self.depth += 1;
        budget::check_nesting(self.depth, "{{if}}, {{range}} and {{with}} blocks")?;
        let r = self.nodes();
        self.depth -= 1;
        r
    }

    /// Nodes up to an `end`/`else` (returned as the keyword with its tokens).
    fn nodes(&mut self) -> Result<(Vec<Node>, Option<String>), TemplateError> {
        let mut nodes = Vec::new();
        while self.at < self.items.len() {
            let item = std::mem::replace(&mut self.items[self.at], Item::Text(String::new()));
            self.at += 1;
            let toks = match item {
                Item::Text(t) => {
                    nodes.push(Node::Text(t));
                    continue;
                }
                Item::Action(toks) => toks,
            };
            let keyword = match toks.first() {
                Some(Tok::Ident(k)) => k.clone(),
                _ => String::new(),
            };
            match keyword.as_str() {
                "end" => return Ok((nodes, Some("end".into()))),
                "else" => {
                    let rest = &toks[1..];
                    let tail = match rest.first() {
                        Some(Tok::Ident(k)) if k == "if" => {
                            self.pending_else_if = Some(pipe(&rest[1..])?);
                            "else if".to_string()
                        }
                        None => "else".to_string(),
                        _ => {
                            return Err(TemplateError::Parse("unexpected tokens after else".into()))
                        }
                    };
                    return Ok((nodes, Some(tail)));
                }
                "if" => nodes.push(self.if_node(pipe(&toks[1..])?)?),
                "range" | "with" => {
                    let p = pipe(&toks[1..])?;
                    let (body, end) = self.block()?;
                    let otherwise = match end.as_deref() {
                        Some("end") => Vec::new(),
                        Some("else") => self.expect_end()?,
                        _ => return Err(TemplateError::Parse(format!("{keyword} without end"))),
                    };
                    nodes.push(if keyword == "range" {
                        Node::Range {
                            pipe: p,
                            body,
                            otherwise,
                        }
                    } else {
                        Node::With {
                            pipe: p,
                            body,
                            otherwise,
                        }
                    });
                }
                "define" | "template" | "block" | "break" | "continue" => {
                    return Err(TemplateError::Unsupported(format!("the {keyword} action")))
                }
                _ => nodes.push(Node::Action(pipe(&toks)?)),
            }
        }
        Ok((nodes, None))
    }

    fn expect_end(&mut self) -> Result<Vec<Node>, TemplateError> {
        match self.block()? {
            (nodes, Some(e)) if e == "end" => Ok(nodes),
            _ => Err(TemplateError::Parse("missing {{end}}".into())),
        }
    }

    fn if_node(&mut self, first: Pipe) -> Result<Node, TemplateError> {
        let mut branches = Vec::new();
        let mut cond = first;
        loop {
            let (body, end) = self.block()?;
            branches.push((cond, body));
            match end.as_deref() {
                Some("end") => {
                    return Ok(Node::If {
                        branches,
                        otherwise: Vec::new(),
                    })
                }
                Some("else") => {
                    let otherwise = self.expect_end()?;
                    return Ok(Node::If {
                        branches,
                        otherwise,
                    });
                }
                Some("else if") => {
                    cond = self
                        .pending_else_if
                        .take()
                        .ok_or_else(|| TemplateError::Parse("bad else if".into()))?;
                }
                _ => return Err(TemplateError::Parse("if without {{end}}".into())),
            }
        }
    }
}

fn pipe(toks: &[Tok]) -> Result<Pipe, TemplateError> {
    pipe_at(toks, 0)
}

/// A pipeline inside `level` parentheses.
fn pipe_at(toks: &[Tok], level: usize) -> Result<Pipe, TemplateError> {
    budget::check_nesting(level, "parentheses")?;
    let mut decl = Vec::new();
    let mut assign = false;
    let mut toks = toks;
    // `$x := ...` or `$i, $v := ...`
    if let Some(pos) = toks
        .iter()
        .position(|t| matches!(t, Tok::Declare | Tok::Assign))
    {
        let head = &toks[..pos];
        if head
            .iter()
            .all(|t| matches!(t, Tok::Var(_, f) if f.is_empty()) || *t == Tok::Comma)
        {
            for t in head {
                if let Tok::Var(v, _) = t {
                    decl.push(v.clone());
                }
            }
            assign = toks[pos] == Tok::Assign;
            toks = &toks[pos + 1..];
        }
    }
    let mut cmds = Vec::new();
    let mut i = 0;
    let mut cmd = Vec::new();
    while i < toks.len() {
        match &toks[i] {
            Tok::Bar => {
                if cmd.is_empty() {
                    return Err(TemplateError::Parse("missing command before |".into()));
                }
                cmds.push(std::mem::take(&mut cmd));
                i += 1;
            }
            Tok::Open => {
                let mut depth = 1;
                let start = i + 1;
                let mut j = start;
                while j < toks.len() {
                    match toks[j] {
                        Tok::Open => depth += 1,
                        Tok::Close(_) => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                let Some(Tok::Close(fields)) = toks.get(j) else {
                    return Err(TemplateError::Parse("unclosed left paren".into()));
                };
                cmd.push(Arg::Sub(
                    Box::new(pipe_at(&toks[start..j], level + 1)?),
                    fields.clone(),
                ));
                i = j + 1;
            }
            t => {
                cmd.push(arg(t)?);
                i += 1;
            }
        }
    }
    if cmd.is_empty() {
        return Err(TemplateError::Parse("missing value for command".into()));
    }
    cmds.push(cmd);
    Ok(Pipe { decl, assign, cmds })
}

fn arg(t: &Tok) -> Result<Arg, TemplateError> {
    Ok(match t {
        Tok::Field(f) => Arg::Field(f.clone()),
        Tok::Var(v, f) => Arg::Var(v.clone(), f.clone()),
        Tok::Str(s) => Arg::Str(s.clone()),
        Tok::Num(n) => {
            if let Ok(i) = n.parse::<i64>() {
                Arg::Int(i)
            } else if let Ok(f) = n.parse::<f64>() {
                Arg::Float(f)
            } else {
                return Err(TemplateError::Parse(format!("bad number syntax: {n:?}")));
            }
        }
        Tok::Ident(w) => match w.as_str() {
            "true" => Arg::Bool(true),
            "false" => Arg::Bool(false),
            "nil" => Arg::Nil,
            f if funcs::exists(f) => Arg::Func(f.to_string()),
            f => return Err(TemplateError::UnknownFunction(f.to_string())),
        },
        other => return Err(TemplateError::Parse(format!("unexpected {other:?}"))),
    })
}
