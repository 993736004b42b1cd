//! Running a parsed template over JSON data, with Go's rules: truthiness
//! (false, 0, nil, empty), `<no value>` for a missing key, an error for a
//! field of nothing, variables scoped to their block, `range` over lists and
//! maps (keys sorted), `and`/`or` short-circuiting. Every value read or
//! built, every line written and every iteration is counted against the
//! limits of `budget.rs`.

use serde_json::Value;

use super::budget::{self, Budget};
use super::funcs;
use super::parse::{Arg, Node, Pipe, Template};
use super::TemplateError;

pub(super) fn execute(t: &Template, data: &Value, strict: bool) -> Result<String, TemplateError> {
    let mut st = State {
        vars: vec![("$".to_string(), data.clone())],
        strict,
        out: String::new(),
        budget: Budget::default(),
    };
    st.walk(&t.nodes, data)?;
    Ok(st.out)
}

struct State {
    vars: Vec<(String, Value)>,
    strict: bool,
    out: String,
    budget: Budget,
}

/// Go's truth: false, 0, nil and empty values are false.
pub(super) fn truth(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// `fmt.Sprint` of a value.
pub(super) fn print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(print_inner).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(o) => format!(
            "map[{}]",
            o.iter()
                .map(|(k, v)| format!("{k}:{}", print_inner(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

fn print_inner(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        other => print(other),
    }
}

impl State {
    fn walk(&mut self, nodes: &[Node], dot: &Value) -> Result<(), TemplateError> {
        let depth = self.vars.len();
        for n in nodes {
            self.node(n, dot)?;
        }
        self.vars.truncate(depth);
        Ok(())
    }

    fn node(&mut self, n: &Node, dot: &Value) -> Result<(), TemplateError> {
        match n {
            Node::Text(t) => budget::write(&mut self.out, t)?,
            Node::Action(p) => {
                let v = self.pipe(p, dot)?;
                if p.decl.is_empty() {
                    budget::write(&mut self.out, &print(&v))?;
                }
            }
            Node::If {
                branches,
                otherwise,
            } => {
                for (cond, body) in branches {
                    let depth = self.vars.len();
                    let v = self.pipe(cond, dot)?;
                    if truth(&v) {
                        self.walk(body, dot)?;
                        self.vars.truncate(depth);
                        return Ok(());
                    }
                    self.vars.truncate(depth);
                }
                self.walk(otherwise, dot)?;
            }
            Node::With {
                pipe,
                body,
                otherwise,
            } => {
                let depth = self.vars.len();
                let v = self.pipe(pipe, dot)?;
                if truth(&v) {
                    self.walk(body, &v)?;
                } else {
                    self.walk(otherwise, dot)?;
                }
                self.vars.truncate(depth);
            }
            Node::Range {
                pipe,
                body,
                otherwise,
            } => self.range(pipe, body, otherwise, dot)?,
        }
        Ok(())
    }

    fn range(
        &mut self,
        pipe: &Pipe,
        body: &[Node],
        otherwise: &[Node],
        dot: &Value,
    ) -> Result<(), TemplateError> {
        let depth = self.vars.len();
        let decl = pipe.decl.clone();
        let bare = Pipe {
            decl: Vec::new(),
            assign: false,
            cmds: pipe.cmds.clone(),
        };
        let v = self.pipe(&bare, dot)?;
        let items: Vec<(Value, Value)> = match v {
            Value::Array(a) => a
                .into_iter()
                .enumerate()
                .map(|(i, v)| (Value::from(i as u64), v))
                .collect(),
            Value::Object(o) => o.into_iter().map(|(k, v)| (Value::String(k), v)).collect(),
            Value::Null => Vec::new(),
            other => {
                return Err(TemplateError::Exec(format!(
                    "range can't iterate over {}",
                    print(&other)
                )))
            }
        };
        if items.is_empty() {
            return self.walk(otherwise, dot);
        }
        self.budget.iterate(items.len())?;
        for (k, v) in items {
            match decl.as_slice() {
                [] => {}
                [one] => self.vars.push((one.clone(), v.clone())),
                [a, b, ..] => {
                    self.vars.push((a.clone(), k));
                    self.vars.push((b.clone(), v.clone()));
                }
            }
            self.walk(body, &v)?;
            self.vars.truncate(depth);
        }
        Ok(())
    }

    fn pipe(&mut self, p: &Pipe, dot: &Value) -> Result<Value, TemplateError> {
        let mut last: Option<Value> = None;
        for cmd in &p.cmds {
            last = Some(self.command(cmd, dot, last)?);
        }
        let v = last.unwrap_or(Value::Null);
        for name in &p.decl {
            if p.assign {
                match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = v.clone(),
                    None => return Err(TemplateError::Exec(format!("undefined variable: {name}"))),
                }
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn command(
        &mut self,
        cmd: &[Arg],
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, TemplateError> {
        if let Arg::Func(name) = &cmd[0] {
            if name == "and" || name == "or" {
                return self.and_or(name == "and", &cmd[1..], dot, piped);
            }
            let mut args = Vec::with_capacity(cmd.len());
            for a in &cmd[1..] {
                args.push(self.arg(a, dot)?);
            }
            if let Some(p) = piped {
                args.push(p);
            }
            let v = funcs::call(name, &args)?;
            self.budget.result(name, &v)?;
            return Ok(v);
        }
        if cmd.len() > 1 || piped.is_some() {
            return Err(TemplateError::Exec(
                "can't give an argument to a non-function".into(),
            ));
        }
        self.arg(&cmd[0], dot)
    }

    fn and_or(
        &mut self,
        and: bool,
        args: &[Arg],
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, TemplateError> {
        let mut last = Value::Null;
        let n = args.len() + usize::from(piped.is_some());
        if n == 0 {
            return Err(TemplateError::Exec(format!(
                "wrong number of args for {}: want at least 1 got 0",
                if and { "and" } else { "or" }
            )));
        }
        for a in args {
            last = self.arg(a, dot)?;
            if truth(&last) != and {
                return Ok(last);
            }
        }
        if let Some(p) = piped {
            last = p;
        }
        Ok(last)
    }

    fn arg(&mut self, a: &Arg, dot: &Value) -> Result<Value, TemplateError> {
        let v = self.arg_value(a, dot)?;
        if !matches!(a, Arg::Func(_) | Arg::Sub(..)) {
            // Function results are charged where they are built.
            self.budget.charge(&v)?;
        }
        Ok(v)
    }

    fn arg_value(&mut self, a: &Arg, dot: &Value) -> Result<Value, TemplateError> {
        Ok(match a {
            Arg::Field(f) => self.fields(dot, f, "")?,
            Arg::Var(name, f) => {
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v)
                    .ok_or_else(|| TemplateError::Exec(format!("undefined variable: {name}")))?;
                self.fields(v, f, name)?
            }
            Arg::Str(s) => Value::String(s.clone()),
            Arg::Int(i) => Value::from(*i),
            Arg::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Arg::Bool(b) => Value::Bool(*b),
            Arg::Nil => Value::Null,
            Arg::Func(name) => {
                let v = funcs::call(name, &[])?;
                self.budget.result(name, &v)?;
                v
            }
            Arg::Sub(p, f) => {
                let v = self.pipe(p, dot)?;
                self.fields(&v, f, "(...)")?
            }
        })
    }

    /// `base.a.b`, cloning only the value found.
    fn fields(&self, base: &Value, path: &[String], start: &str) -> Result<Value, TemplateError> {
        static NULL: Value = Value::Null;
        let mut cur = base;
        let mut seen = start.to_string();
        for f in path {
            cur = match cur {
                Value::Object(m) => match m.get(f) {
                    Some(v) => v,
                    None if self.strict => {
                        return Err(TemplateError::Exec(format!(
                            "map has no entry for key {f:?} (at {seen}.{f})"
                        )))
                    }
                    None => &NULL,
                },
                Value::Null => {
                    return Err(TemplateError::Exec(format!(
                        "nil pointer evaluating {seen}.{f}: {seen} is not set"
                    )))
                }
                other => {
                    return Err(TemplateError::Exec(format!(
                        "can't evaluate field {f} in {}",
                        print(other)
                    )))
                }
            };
            seen.push('.');
            seen.push_str(f);
        }
        Ok(cur.clone())
    }
}
