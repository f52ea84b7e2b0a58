//! CLIP token ids against transformers' CLIPTokenizer as diffusers calls it (tests/golden/clip_tokens.json,
//! made by scripts/golden/tokenizer.py), for SD1 padding (<|endoftext|>) and SD2 / SD-Turbo padding ("!").

mod common;

use latentcam::diffusion::text::ClipTokenizer;
use latentcam::model::TokenizerSettings;
use serde_json::Value;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn ids_match_the_python_reference_for_every_prompt() {
    let text = std::fs::read_to_string(common::golden("clip_tokens.json")).unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    let path = common::model_dir("tiny-clip").join("tokenizer.json");
    let sd1 = ClipTokenizer::load(&path, &TokenizerSettings::default()).unwrap();
    let sd2 = ClipTokenizer::load(&path, &TokenizerSettings { pad_token: "!".into(), max_length: 77 }).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    let mut non_ascii = 0;
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        non_ascii += usize::from(!prompt.is_ascii());
        let got = sd1.ids(prompt).unwrap();
        assert_eq!(got.len(), 77, "{prompt:?}");
        assert_eq!(got, ids(&case["ids_sd1"]), "SD1 ids for {prompt:?}");
        assert_eq!(sd2.ids(prompt).unwrap(), ids(&case["ids_sd2"]), "SD2 ids for {prompt:?}");
    }
    assert!(non_ascii >= 4, "the golden file should exercise Unicode prompts");
}

#[test]
fn a_pad_token_missing_from_the_vocabulary_is_a_clear_error() {
    let path = common::model_dir("tiny-clip").join("tokenizer.json");
    let settings = TokenizerSettings { pad_token: "<pad>".into(), max_length: 77 };
    let err = ClipTokenizer::load(&path, &settings).err().expect("must fail").to_string();
    assert!(err.contains("<pad>") && err.contains("vocabulary"), "{err}");
}
