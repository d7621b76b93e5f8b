//! The Chat Completions API (`POST {base_url}/chat/completions`) as OpenAI, Ollama, vLLM,
//! llama.cpp's server and LM Studio serve it: the request body of a turn ([`request`]), a
//! whole response ([`response`]), and a streamed one ([`OpenAiStreamState`]).

pub mod request;
pub mod response;
mod stream;

pub use request::{body, message_json, messages, request_body, tool, tools};
pub use response::{finish_reason, parse_response, usage};
pub use stream::OpenAiStreamState;
