// A chat page as a Next.js app would write it: useChat from @ai-sdk/react with its default
// transport (POST /api/chat on the page's own origin), messages rendered from their parts, the
// status, the error, a stop button, and each answer's metadata (provider, model, usage, cost,
// request id) as the gateway sends it in the finish chunk.
//
// Test knobs, from the query string: ?route=NAME preselects the route; ?headers={JSON} adds
// request headers (x-sim-* ones reach the simulator through the gateway); ?resume=1 keeps the
// chat's id and the user's messages in sessionStorage and uses useChat({ resume: true }), so a
// page reloaded mid-answer reconnects to the gateway's stream (docs/resume.md).

import { useChat } from '@ai-sdk/react';
import { useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';

const params = new URLSearchParams(window.location.search);
const extraHeaders = JSON.parse(params.get('headers') ?? '{}');
const resumable = params.get('resume') === '1';
const stored = resumable ? JSON.parse(sessionStorage.getItem('chat') ?? 'null') : null;
const chatOptions = resumable
  ? { id: stored?.id ?? crypto.randomUUID(), messages: stored?.messages ?? [], resume: true }
  : {};

function Metadata({ metadata }) {
  if (!metadata) return null;
  const { provider, model, route, usage, costUsd, requestId, ttftMs } = metadata;
  const fields = [
    ['route', route],
    ['provider', provider],
    ['model', model],
    ['input-tokens', usage?.inputTokens],
    ['output-tokens', usage?.outputTokens],
    ['cost', costUsd == null ? undefined : `$${costUsd}`],
    ['ttft', ttftMs == null ? undefined : `${Math.round(ttftMs)} ms`],
    ['request-id', requestId],
  ];
  return (
    <dl className="metadata">
      {fields
        .filter(([, value]) => value !== undefined)
        .map(([name, value]) => (
          <div key={name}>
            <dt>{name}</dt>
            <dd data-field={name}>{String(value)}</dd>
          </div>
        ))}
    </dl>
  );
}

function Message({ message }) {
  return (
    <li className={`message ${message.role}`} data-role={message.role} data-id={message.id}>
      <div className="role">{message.role === 'user' ? 'You' : 'Assistant'}</div>
      <div className="text">
        {message.parts.map((part, index) => {
          if (part.type === 'text') return <span key={index}>{part.text}</span>;
          if (part.type === 'reasoning')
            return (
              <em key={index} className="reasoning">
                {part.text}
              </em>
            );
          return null;
        })}
      </div>
      {message.role === 'assistant' && <Metadata metadata={message.metadata} />}
    </li>
  );
}

function App() {
  const { id, messages, sendMessage, status, error, stop } = useChat(chatOptions);
  useEffect(() => {
    if (!resumable) return;
    const asked = messages.filter((message) => message.role === 'user');
    sessionStorage.setItem('chat', JSON.stringify({ id, messages: asked }));
  }, [id, messages]);
  const [input, setInput] = useState('');
  const [route, setRoute] = useState(params.get('route') ?? 'default');
  const busy = status === 'submitted' || status === 'streaming';

  function submit(event) {
    event.preventDefault();
    if (!input.trim()) return;
    sendMessage({ text: input }, { body: { route }, headers: extraHeaders });
    setInput('');
  }

  return (
    <main>
      <header>
        <h1>tokenrelay · useChat</h1>
        <span id="status" className={`status ${status}`} data-status={status}>
          {status}
        </span>
      </header>
      <ol id="messages">
        {messages.map((message) => (
          <Message key={message.id} message={message} />
        ))}
      </ol>
      {error && (
        <div id="error" role="alert">
          {error.message}
        </div>
      )}
      <form onSubmit={submit}>
        <label>
          route
          <input id="route" value={route} onChange={(e) => setRoute(e.target.value)} size={8} />
        </label>
        <input
          id="prompt"
          value={input}
          onChange={(e) => setInput(e.target.value)}
          placeholder="Ask something"
          autoComplete="off"
        />
        <button id="send" type="submit" disabled={busy}>
          Send
        </button>
        <button id="stop" type="button" onClick={() => stop()} disabled={!busy}>
          Stop
        </button>
      </form>
    </main>
  );
}

createRoot(document.getElementById('root')).render(<App />);
