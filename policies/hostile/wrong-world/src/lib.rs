//! A component of another world (it exports `run`, not `decide`).

wit_bindgen::generate!({
    world: "runner",
    path: "wit",
});

struct Runner;

impl Guest for Runner {
    fn run() -> String {
        "hello".into()
    }
}

export!(Runner);
