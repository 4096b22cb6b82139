"""The only code that talks to LanceDB / Arrow."""
