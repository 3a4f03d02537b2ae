"""Multi-turn chat with saved sessions.

from pipelines.chat import Conversation, SessionStore
store = SessionStore.in_data_dir(settings.data_dir)
chat = Conversation(model=backend.chat, store=store)
session = store.create()
chat.invoke({"session": session, "message": "Hello"}).answer
"""

from pipelines.chat.conversation import ChatReply, ChatTurn, Conversation, SessionHistory
from pipelines.chat.rag_chat import RAGChatReply, RAGConversation, Rewritten
from pipelines.chat.store import Message, SessionInfo, SessionStore

__all__ = [
    "ChatReply",
    "ChatTurn",
    "Conversation",
    "Message",
    "RAGChatReply",
    "RAGConversation",
    "Rewritten",
    "SessionHistory",
    "SessionInfo",
    "SessionStore",
]
