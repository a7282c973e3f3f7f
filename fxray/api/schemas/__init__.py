"""The API's request and response models (pydantic), one module per route module; their class
names are the OpenAPI component names. Patterns and models several of them share are in
:mod:`fxray.api.schemas.common`."""
