// Embeds texts through `cachedembed serve` with two real JavaScript clients from npm:
// the official `openai` package, and Chroma's `OpenAIEmbeddingFunction` (@chroma-core/openai)
// pointed at the server with its `apiBase` option.
// Usage: node embed.mjs BASE_URL API_KEY MODEL TEXT...
// Prints JSON on stdout: {"float": [[...]], "base64": [[...]], "chroma": [[...]], "usage": {...}}.
// "float" asks for encoding_format "float"; "base64" lets the SDK use its default (base64,
// decoded by the SDK into numbers), exactly as applications call it.
import { OpenAIEmbeddingFunction } from "@chroma-core/openai";
import OpenAI from "openai";

const [baseURL, apiKey, model, ...input] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

const asFloat = await client.embeddings.create({ model, input, encoding_format: "float" });
const byDefault = await client.embeddings.create({ model, input });
const chroma = new OpenAIEmbeddingFunction({ apiKey, modelName: model, apiBase: baseURL });

const vectors = (response) =>
  response.data.sort((a, b) => a.index - b.index).map((item) => Array.from(item.embedding));

console.log(
  JSON.stringify({
    float: vectors(asFloat),
    base64: vectors(byDefault),
    chroma: await chroma.generate(input),
    usage: byDefault.usage,
  }),
);
