//! Reading a CLIP tokenizer from what a model folder holds: a `tokenizer.json` (the `tokenizers` crate's own
//! format), or a transformers tokenizer folder whose slow tokenizer was saved as `vocab.json` + `merges.txt`
//! (diffusers pipelines and optimum exports save it so).
//!
//! The latter is turned into the pipeline transformers' converter builds for `CLIPTokenizerFast` (NFC, whitespace
//! runs to one space, lower case; CLIP's split pattern, byte-level; BPE with `</w>` word ends; start and end tokens
//! around the ids), so both forms give the same ids (tests/tokenizer_golden.rs checks it against transformers).

use std::path::Path;

use serde_json::{Value, json};
use tokenizers::Tokenizer;

/// CLIP's start and end tokens.
const START: &str = "<|startoftext|>";
const END: &str = "<|endoftext|>";

/// CLIP's pre-tokenizer pattern (its `bpe` regex, as transformers' converter writes it).
const SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The tokenizer at `path`: a `tokenizer.json`, or a folder holding one or `vocab.json` + `merges.txt`.
pub fn load(path: &Path) -> Result<Tokenizer, String> {
    if path.is_file() {
        return Tokenizer::from_file(path).map_err(|e| format!("not a valid tokenizer.json: {e}"));
    }
    if !path.is_dir() {
        return Err("no such file".into());
    }
    let json_file = path.join("tokenizer.json");
    if json_file.is_file() {
        return Tokenizer::from_file(&json_file).map_err(|e| format!("tokenizer.json is not valid: {e}"));
    }
    let (vocab_file, merges_file) = (path.join("vocab.json"), path.join("merges.txt"));
    if !(vocab_file.is_file() && merges_file.is_file()) {
        return Err("a tokenizer folder needs tokenizer.json, or vocab.json and merges.txt".into());
    }
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let vocab: serde_json::Map<String, Value> =
        serde_json::from_str(&read(&vocab_file)?).map_err(|e| format!("vocab.json is not a token -> id map: {e}"))?;
    let merges = parse_merges(&read(&merges_file)?)?;
    let spec = clip_pipeline(vocab, merges)?;
    spec.to_string().parse::<Tokenizer>().map_err(|e| format!("vocab.json and merges.txt do not make a tokenizer: {e}"))
}

/// `merges.txt`: a `#version` line, then one merge ("a b") per line.
fn parse_merges(text: &str) -> Result<Vec<[String; 2]>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.starts_with("#version") && !line.trim().is_empty())
        .map(|(i, line)| match line.split(' ').collect::<Vec<_>>()[..] {
            [a, b] => Ok([a.to_string(), b.to_string()]),
            _ => Err(format!("merges.txt line {}: expected two tokens separated by a space, found {line:?}", i + 1)),
        })
        .collect()
}

/// The `tokenizer.json` of a CLIP tokenizer with this vocabulary and these merges.
fn clip_pipeline(vocab: serde_json::Map<String, Value>, merges: Vec<[String; 2]>) -> Result<Value, String> {
    let id = |token: &str| {
        vocab
            .get(token)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("vocab.json has no {token} (not a CLIP vocabulary)"))
    };
    let (start, end) = (id(START)?, id(END)?);
    let special = |token: &str, id: u64| {
        json!({"id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(START, start), special(END, end)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": SPLIT_PATTERN}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": [END, end], "cls": [START, start],
                           "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": END, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed tokenizer.json's vocabulary and merges written out as transformers saves a slow tokenizer.
    fn as_vocab_and_merges(dir: &Path) {
        let json_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-clip/tokenizer.json");
        let spec: Value = serde_json::from_str(&std::fs::read_to_string(json_file).unwrap()).unwrap();
        std::fs::write(dir.join("vocab.json"), spec["model"]["vocab"].to_string()).unwrap();
        let mut merges = String::from("#version: 0.2\n");
        for m in spec["model"]["merges"].as_array().unwrap() {
            merges.push_str(&format!("{} {}\n", m[0].as_str().unwrap(), m[1].as_str().unwrap()));
        }
        std::fs::write(dir.join("merges.txt"), merges).unwrap();
    }

    #[test]
    fn vocab_and_merges_tokenize_as_the_tokenizer_json() {
        let dir = tempfile::tempdir().unwrap();
        as_vocab_and_merges(dir.path());
        let from_files = load(dir.path()).unwrap();
        let reference = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-clip/tokenizer.json")).unwrap();
        for prompt in [
            "a watercolor painting of a fox",
            "Portrait,  oil on CANVAS!!  by Rembrandt's   studio, 1642",
            "cyberpunk city at night, neon 80s synthwave — ünïcödé",
            "",
        ] {
            let a = from_files.encode(prompt, true).unwrap();
            let b = reference.encode(prompt, true).unwrap();
            assert_eq!(a.get_ids(), b.get_ids(), "{prompt:?}");
        }
    }

    #[test]
    fn a_folder_without_the_files_says_what_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.contains("vocab.json and merges.txt"), "{e}");
        std::fs::write(dir.path().join("vocab.json"), "{\"a\": 0}").unwrap();
        std::fs::write(dir.path().join("merges.txt"), "#version: 0.2\na b c\n").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.contains("merges.txt line 2"), "{e}");
    }
}
