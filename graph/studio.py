"""The compiled graph LangGraph Studio serves (see ``langgraph.json``)."""

from graph._builder import build_graph

graph = build_graph()
