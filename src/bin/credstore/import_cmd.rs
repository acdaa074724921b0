//! Keys in bulk, from JSON Lines (`credstore::import` parses the lines): `credstore import
//! FILE` (keys of another system, by their SHA-256), `create --from FILE` and `revoke
//! --from FILE`. FILE `-` is stdin. Every line is checked before anything is written; a
//! bad line is refused by its number and field (exit 2). Through a running server the
//! CLI sends the file's contents as the command's stdin (at most `bridge::MAX_REQUEST`).

use std::io::Read;
use std::path::Path;

use credstore::import::{RevokeTarget, is_blank, parse_create_line, parse_import_line, parse_revoke_line};
use credstore::{CreatedKey, KeyId, NewKey};
use serde_json::json;

use crate::output::docs::{CreatedDoc, ImportedDoc};
use crate::{Failure, bridge, command_store, progress_bar, usage};

/// Threads issuing keys at once for `create --from`: their creates share commits (one
/// fsync for all that arrive together).
const CREATE_THREADS: usize = 8;

/// The import keys of a body of JSON Lines, or of a JSON array of line objects (the
/// sidecar's `POST /v1/api-keys/import` takes either); blank lines are skipped, counted.
///
/// # Errors
/// [`credstore::InputError::BadLine`] for the first bad line (or array element).
pub fn import_keys(text: &str) -> Result<Vec<credstore::import::ImportKey>, credstore::InputError> {
    if text.trim_start().starts_with('[') {
        let items: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| credstore::InputError::BadLine {
            line: 1,
            field: "body".into(),
            why: credstore::redact::scrub(&e.to_string()).into_owned(),
        })?;
        return items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_import_line(&item.to_string(), i + 1))
            .collect();
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !is_blank(line))
        .map(|(i, line)| parse_import_line(line, i + 1))
        .collect()
}

/// `credstore import FILE [--json]`.
pub fn import(data: &Path, file: &Path, json: bool) -> Result<u8, Failure> {
    let text = read_source(file)?;
    let keys = import_keys(&text)?;
    if keys.is_empty() {
        return Err(usage("nothing to import: the file holds no lines"));
    }
    let store = command_store(data)?;
    let lines: Vec<usize> = keys.iter().map(|k| k.line).collect();
    let bar = progress_bar(keys.len() as u64, "importing");
    let records = store.import(keys, |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    if json {
        let doc = serde_json::to_value(ImportedDoc::from(&records, &lines)).unwrap_or_default();
        outln!("{doc}");
    } else {
        outln!(
            "Imported {} key(s): they verify as they did before, and each is re-tagged under this store's pepper on its first use.",
            records.len()
        );
    }
    store.close()?;
    Ok(0)
}

/// `credstore create --from FILE`: one key per line, printed once as a line of JSON
/// (`CreatedDoc` with the line's number) on stdout, in the file's order.
pub fn create_from(data: &Path, file: &Path) -> Result<u8, Failure> {
    let text = read_source(file)?;
    let store = command_store(data)?;
    let formats = store.formats();
    let mut wanted: Vec<(usize, NewKey)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if !is_blank(line) {
            wanted.push((i + 1, parse_create_line(line, i + 1, &formats)?));
        }
    }
    if wanted.is_empty() {
        return Err(usage("nothing to create: the file holds no lines"));
    }
    let bar = progress_bar(wanted.len() as u64, "creating");
    let mut results: Vec<Option<credstore::Result<CreatedKey>>> = (0..wanted.len()).map(|_| None).collect();
    let store_ref: &credstore::Store = &store;
    std::thread::scope(|scope| {
        let chunk = wanted.len().div_ceil(CREATE_THREADS).max(1);
        for (keys, slots) in wanted.chunks(chunk).zip(results.chunks_mut(chunk)) {
            let bar = &bar;
            scope.spawn(move || {
                for ((_, new), slot) in keys.iter().zip(slots) {
                    *slot = Some(store_ref.create(new.clone()));
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    // Every key created is printed, also when others failed: it exists now.
    let mut failed = Vec::new();
    let mut created = 0;
    for ((line, _), result) in wanted.iter().zip(results) {
        match result {
            Some(Ok(key)) => {
                let mut doc = serde_json::to_value(CreatedDoc::from(&key, None)).unwrap_or_default();
                if let Some(fields) = doc.as_object_mut() {
                    fields.insert("line".into(), json!(line));
                }
                outln!("{doc}");
                created += 1;
            }
            Some(Err(e)) => failed.push(format!("line {line}: {e}")),
            None => failed.push(format!("line {line}: not created")),
        }
    }
    store.close()?;
    if let Some(first) = failed.first() {
        return Err(Failure {
            code: if created == 0 { 2 } else { 3 },
            message: format!(
                "{} key(s) created (printed above), {} refused; the first: {first}",
                created,
                failed.len()
            ),
        });
    }
    errln!("Created {created} key(s); each is printed once above: copy them now.");
    Ok(0)
}

/// `credstore revoke --from FILE [--reason TEXT] [--yes] [--json]`: every line's key is
/// found first (a line naming no key of this store refuses the whole file); keys revoked
/// already are counted, not revoked again.
pub fn revoke_from(data: &Path, file: &Path, reason: Option<&str>, yes: bool, json: bool) -> Result<u8, Failure> {
    let text = read_source(file)?;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if !is_blank(line) {
            lines.push(parse_revoke_line(line, i + 1)?);
        }
    }
    if lines.is_empty() {
        return Err(usage("nothing to revoke: the file holds no lines"));
    }
    let store = command_store(data)?;
    let mut targets: Vec<(usize, KeyId, Option<String>, bool)> = Vec::new();
    for line in &lines {
        let info = match &line.target {
            RevokeTarget::Id(id) => store.get(id).map_err(|e| at_line(line.line, "id", &e))?,
            RevokeTarget::Key(key) => store.find_by_key(key.expose())?.ok_or_else(|| {
                Failure::from(credstore::InputError::BadLine {
                    line: line.line,
                    field: "key".into(),
                    why: "not a key of this store (malformed, or unknown)".into(),
                })
            })?,
        };
        let revoked = info.status == credstore::Status::Revoked;
        let why = line.reason.clone().or_else(|| reason.map(str::to_string));
        targets.push((line.line, info.record.id, why, revoked));
    }
    if !yes && crate::stdin_is_terminal() {
        if file == Path::new("-") {
            return Err(usage(
                "the lines came from the terminal, which cannot confirm too: pass --yes",
            ));
        }
        output_prompt(targets.len());
        let answer = crate::read_stdin_line()?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
            return Err(usage("revocation cancelled"));
        }
    }
    let bar = progress_bar(targets.len() as u64, "revoking");
    let mut done = Vec::new();
    let mut already = 0;
    for (line, id, why, revoked) in &targets {
        if *revoked {
            already += 1;
        } else {
            store.revoke(id, why.as_deref())?;
            done.push(json!({ "line": line, "id": id }));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if json {
        outln!(
            "{}",
            json!({ "revoked": done.len(), "already_revoked": already, "keys": done })
        );
    } else {
        outln!("Revoked {} key(s); {already} were revoked already.", done.len());
    }
    store.close()?;
    Ok(0)
}

fn output_prompt(count: usize) {
    crate::output::write_stderr(format_args!("Revoke {count} key(s)? This cannot be undone. [y/N] "));
}

fn at_line(line: usize, field: &str, e: &credstore::Error) -> Failure {
    let mut failure = Failure::from(credstore::Error::from(credstore::InputError::BadLine {
        line,
        field: field.into(),
        why: e.to_string(),
    }));
    // An unknown key is bad input (2); a store that cannot be read is not.
    if !matches!(e, credstore::Error::State(_) | credstore::Error::Input(_)) {
        failure.code = 3;
    }
    failure
}

/// The lines to act on: the CLI's (sent as stdin) when the server runs the command, else
/// stdin for `-`, else the file.
fn read_source(file: &Path) -> Result<String, Failure> {
    let mut text = String::new();
    let read = match bridge::with_stdin(|input| input.read_to_string(&mut text)) {
        Some(read) => read,
        None if file == Path::new("-") => std::io::stdin().lock().read_to_string(&mut text),
        None => std::fs::File::open(file).and_then(|mut f| f.read_to_string(&mut text)),
    };
    read.map_err(|e| usage(format!("cannot read {}: {e}", credstore::redact::path(file))))?;
    Ok(text)
}
