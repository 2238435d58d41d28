"""Prompt ensembles as a domain: the rules a file must follow (checks), writing one with a chat endpoint
(generate), and looking at one through a frozen model (inspection, analysis, interpret for learned
context). The tools in tools/ are the command lines over these modules.

Nothing is imported here, so `import prompts.checks` does not pay for torch.
"""
